//! Minting the cluster CA and node certificates for Raft mutual TLS (`vaultctl cluster certs`).
//!
//! Every node certificate names its node id as the DNS name `vault-node-<id>` (what peers
//! verify when dialing it, and what the Raft port reads to admit it), plus any extra
//! addresses, and is good for both server and client authentication. Keys are ECDSA P-256,
//! written 0600. An existing CA in the directory is reused, so nodes can be added later.
//! Existing node files are kept unless `renew` is asked for, which replaces them atomically
//! (a running node picks the new files up on SIGHUP).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::clock::date_in_days;
use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

const CA_NAME: &str = "vault cluster CA";

/// The DNS name (and common name) of node `id`'s certificate: what the Raft transport dials
/// and admits (`vault_raft::transport::node_server_name`; the test below checks they agree).
fn node_server_name(id: u64) -> String {
    format!("vault-node-{id}")
}

fn validity(params: &mut CertificateParams, days: i64) {
    let (y, m, d) = date_in_days(-1);
    params.not_before = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
    let (y, m, d) = date_in_days(days);
    params.not_after = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
}

fn ca_params(days: i64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut p, days);
    p
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Writes `path` through a temporary file renamed over it, so a reader sees the old file or
/// the new one, never half of one.
fn replace_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_file(&tmp, contents, mode)?;
    fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))
}

/// The CA `<stem>.pem`/`<stem>.key` in `out`: the existing one, or a new one made from `params`
/// (its files are added to `written`). A certificate without its key is never overwritten.
fn load_or_create_ca(
    out: &Path,
    stem: &str,
    params: CertificateParams,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let (pem, key_path) = (out.join(format!("{stem}.pem")), out.join(format!("{stem}.key")));
    let key = if key_path.exists() {
        KeyPair::from_pem(&fs::read_to_string(&key_path)?).with_context(|| format!("read {stem}.key"))?
    } else {
        if pem.exists() {
            bail!("{} exists without {stem}.key; refusing to mint a second CA over it", pem.display());
        }
        let key = KeyPair::generate().context("generate CA key")?;
        let cert = params.clone().self_signed(&key).context("self-sign CA")?;
        write_file(&key_path, &key.serialize_pem(), 0o600)?;
        write_file(&pem, &cert.pem(), 0o644)?;
        written.extend([pem, key_path]);
        key
    };
    Ok(Issuer::new(params, key))
}

/// Writes `ca.pem`/`ca.key` (unless present) and `node-<id>.pem`/`.key` for each id into
/// `out`. `sans` are extra IP addresses or DNS names for every node certificate. Returns the
/// files written.
pub fn mint(out: &Path, nodes: &[u64], sans: &[String], days: i64, renew: bool) -> anyhow::Result<Vec<PathBuf>> {
    if nodes.is_empty() || nodes.contains(&0) {
        bail!("name node ids of at least 1");
    }
    fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    fs::set_permissions(out, fs::Permissions::from_mode(0o700))?;
    let mut written = Vec::new();
    let issuer = load_or_create_ca(out, "ca", ca_params(3650), &mut written)?;

    for id in nodes {
        let (pem, key_path) = (out.join(format!("node-{id}.pem")), out.join(format!("node-{id}.key")));
        if !renew && (pem.exists() || key_path.exists()) {
            continue;
        }
        let mut params = CertificateParams::new(vec![node_server_name(*id)]).context("certificate names")?;
        for san in sans {
            match san.parse::<IpAddr>() {
                Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
                Err(_) => params.subject_alt_names.push(SanType::DnsName(
                    san.clone().try_into().map_err(|_| anyhow::anyhow!("--san {san:?} is not an IP or DNS name"))?,
                )),
            }
        }
        params.distinguished_name.push(DnType::CommonName, node_server_name(*id));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let key = KeyPair::generate().context("generate node key")?;
        let cert = params.signed_by(&key, &issuer).context("sign node certificate")?;
        replace_file(&key_path, &key.serialize_pem(), 0o600)?;
        replace_file(&pem, &cert.pem(), 0o644)?;
        written.extend([pem, key_path]);
    }
    Ok(written)
}

const READER_CA_NAME: &str = "vault reader CA";

/// Writes `reader-ca.pem`/`reader-ca.key` (unless present) and `reader-<cn>.pem`/`.key`, a
/// client-authentication certificate whose subject common name is `cn`, into `out`. The reader
/// CA is its own, apart from the cluster CA: a node certificate is no reader certificate.
pub fn mint_reader(out: &Path, cn: &str, days: i64) -> anyhow::Result<Vec<PathBuf>> {
    vault_core::model::ReaderRule::new("check", &[], &[cn.to_string()], &["*".to_string()], 0)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if cn.contains('/') || cn.starts_with('.') {
        bail!("a reader certificate name used as a file name must not contain '/' or start with '.'");
    }
    fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    fs::set_permissions(out, fs::Permissions::from_mode(0o700))?;
    let mut written = Vec::new();
    let mut ca = ca_params(3650);
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, READER_CA_NAME);
    let issuer = load_or_create_ca(out, "reader-ca", ca, &mut written)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate().context("generate reader key")?;
    let cert = params.signed_by(&key, &issuer).context("sign reader certificate")?;
    let (pem, key_path) = (out.join(format!("reader-{cn}.pem")), out.join(format!("reader-{cn}.key")));
    replace_file(&key_path, &key.serialize_pem(), 0o600)?;
    replace_file(&pem, &cert.pem(), 0o644)?;
    written.extend([pem, key_path]);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rustls_pki_der(pem: &str) -> Vec<u8> {
        use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    }

    #[test]
    fn mints_ca_once_and_adds_nodes_later() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let first = mint(&out, &[1, 2], &["127.0.0.1".into()], 30, false).unwrap();
        assert_eq!(first.len(), 6);
        let ca_before = fs::read(out.join("ca.pem")).unwrap();
        let again = mint(&out, &[1, 2, 3], &[], 30, false).unwrap();
        assert_eq!(again, vec![out.join("node-3.pem"), out.join("node-3.key")], "only the new node");
        assert_eq!(fs::read(out.join("ca.pem")).unwrap(), ca_before, "CA reused");
        let mode = fs::metadata(out.join("node-3.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(fs::read_to_string(out.join("node-1.pem")).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(mint(&out, &[0], &[], 30, false).is_err());
        let node1 = fs::read(out.join("node-1.pem")).unwrap();
        let renewed = mint(&out, &[1], &[], 30, true).unwrap();
        assert_eq!(renewed, vec![out.join("node-1.pem"), out.join("node-1.key")]);
        assert_ne!(fs::read(out.join("node-1.pem")).unwrap(), node1, "renewed in place");
        assert_eq!(fs::read(out.join("ca.pem")).unwrap(), ca_before, "from the same CA");
        let der = rustls_pki_der(&fs::read_to_string(out.join("node-1.pem")).unwrap());
        assert_eq!(vault_raft::transport::cert_node_id(&der), Some(1));
    }
}
