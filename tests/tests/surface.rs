//! What the API's surface tells a caller who may see little: listings (of secrets and of
//! rotation policies) and their page tokens, and the answers of lifecycle and rotation calls
//! about names the caller may not list.

use std::time::{Duration, Instant};

use tonic::Code;
use vault_node::pb;
use vault_node::pb::secrets_client::SecretsClient;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn token_for(n: &SingleNode, name: &str, role: &str) -> String {
    let json = n.ctl(&["--output", "json", "token", "create", name, "--role", role]);
    serde_json::from_str::<serde_json::Value>(&json).expect("json")["token"].as_str().expect("token").to_string()
}

/// Writes `names` (value "v") through gRPC, many at once.
async fn put_many(url: &str, token: &str, names: Vec<String>) {
    let ch = api_channel(url, None).await.expect("connect");
    let queue = std::sync::Arc::new(std::sync::Mutex::new(names));
    let mut workers = Vec::new();
    for _ in 0..64 {
        let (ch, queue, token) = (ch.clone(), queue.clone(), token.to_string());
        workers.push(tokio::spawn(async move {
            let mut c = SecretsClient::new(ch);
            loop {
                let Some(name) = queue.lock().expect("queue").pop() else { return };
                let put = pb::PutSecretRequest { name, value: b"v".to_vec(), ..Default::default() };
                c.put_secret(authed(put, &token)).await.expect("put");
            }
        }));
    }
    for w in workers {
        w.await.expect("writer");
    }
}

/// Every page of a listing as `token` sees it: (names, next_page_token) per page.
async fn pages(url: &str, token: &str, prefix: &str, page_size: u32) -> Vec<(Vec<String>, String)> {
    let mut c = secrets_client(url).await;
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = pb::ListSecretsRequest { prefix: prefix.into(), page_size, page_token: page_token.clone() };
        let page = c.list_secrets(authed(req, token)).await.expect("list").into_inner();
        let names = page.secrets.iter().map(|s| s.name.clone()).collect();
        page_token = page.next_page_token.clone();
        out.push((names, page.next_page_token));
        assert!(out.len() < 100, "a listing of a few names never ends: {out:?}");
        if page_token.is_empty() {
            return out;
        }
    }
}

async fn list_with(
    url: &str,
    token: &str,
    prefix: &str,
    page_token: &str,
) -> Result<pb::ListSecretsResponse, tonic::Status> {
    let req = pb::ListSecretsRequest { prefix: prefix.into(), page_size: 1, page_token: page_token.into() };
    secrets_client(url).await.list_secrets(authed(req, token)).await.map(|r| r.into_inner())
}

/// A page token built here as `vault-node/src/api/page_token.rs` issues one (its check value
/// is no secret): for a listing of `prefix`, continuing after `last`.
fn well_formed_page_token(prefix: &str, last: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut body = u16::try_from(prefix.len()).expect("a short prefix").to_be_bytes().to_vec();
    body.extend_from_slice(prefix.as_bytes());
    body.extend_from_slice(last.as_bytes());
    let sum = Sha256::new().chain_update(b"vault ListSecrets page token v1\0").chain_update(&body).finalize();
    body.extend_from_slice(&sum[..8]);
    format!("v1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body))
}

/// More than 10,000 names the token may not list sit between names it may: its listing, page
/// tokens included, is the same as before they were written, it walks every page, and it
/// cannot start from a position it chose (a name, a garbage string, another prefix's token, a
/// well-formed token at a name it may not list).
/// The admin still pages through everything with `vaultctl secret list`.
#[test]
fn page_tokens_reveal_nothing_outside_the_grants_and_only_issued_ones_are_taken() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        let url = n.url();
        n.ctl(&["role", "create", "lister", "--grant", "list:app/*", "--grant", "list:zzz/last"]);
        let lister = token_for(&n, "l1", "lister");
        for name in ["app/a1", "app/a2", "zzz/last"] {
            n.ctl(&["secret", "put", name, "--value", "v"]);
        }
        let mut seen_before = Vec::new();
        for size in [1000, 1, 2] {
            seen_before.push((size, pages(&url, &lister, "", size).await));
        }
        let all: Vec<String> = seen_before[0].1.iter().flat_map(|(names, _)| names.clone()).collect();
        assert_eq!(all, ["app/a1", "app/a2", "zzz/last"]);

        let started = Instant::now();
        let hidden: Vec<String> = (0..10_050).map(|i| format!("hidden/{i:05}")).collect();
        put_many(&url, &n.token, hidden.clone()).await;
        eprintln!("10,050 puts took {:?}", started.elapsed());

        for (size, want) in &seen_before {
            let got = pages(&url, &lister, "", *size).await;
            assert_eq!(&got, want, "pages of size {size} changed when names the token may not list were added");
        }
        // A position the token did not get from this listing is refused: a name it may not
        // list, garbage, and a token issued for another prefix.
        let app_token = pages(&url, &lister, "app/", 1).await[0].1.clone();
        assert!(!app_token.is_empty(), "a page of one under app/ has a next page");
        for (prefix, bad) in
            [("", "hidden/05000"), ("", "zzzz-garbage"), ("", "%%%"), ("", "app/a1\u{0}"), ("zzz/", app_token.as_str())]
        {
            let e = list_with(&url, &lister, prefix, bad).await.expect_err(&format!("page token {bad:?} taken"));
            assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        }
        assert_eq!(
            list_with(&url, &lister, "app/", &app_token).await.expect("its own token").secrets[0].name,
            "app/a2"
        );
        // A well-formed token is taken at a name the token may list, and refused at one it may
        // not, so choosing positions tells nothing about names outside the grants.
        let at_a1 = well_formed_page_token("", "app/a1");
        assert_eq!(list_with(&url, &lister, "", &at_a1).await.expect("a well-formed token").secrets[0].name, "app/a2");
        let hidden_at = well_formed_page_token("", "hidden/05000");
        let e =
            list_with(&url, &lister, "", &hidden_at).await.expect_err("a position at a name the token may not list");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // The admin's `vaultctl secret list` follows the tokens through every page.
        let listed =
            must_vaultctl(&url, Some(&n.token), &["--output", "json", "secret", "list", "--prefix", "hidden/"]);
        let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
        let names: Vec<&str> = listed.as_array().expect("array").iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(names, hidden.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(started.elapsed() < Duration::from_secs(120), "{:?}", started.elapsed());
    });
}

/// The answer of each lifecycle, rotation and versions call about `name` as `token` gets it:
/// the code and the message with the name replaced by NAME.
async fn answers(url: &str, token: &str, name: &str) -> Vec<(&'static str, (Code, String))> {
    let mut c = secrets_client(url).await;
    let norm = |r: Result<(), tonic::Status>| match r {
        Ok(()) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().replace(name, "NAME")),
    };
    let versions = || pb::VersionsRequest { name: name.into(), versions: vec![1] };
    let mut out = Vec::new();
    out.push((
        "versions",
        norm(c.list_versions(authed(pb::ListVersionsRequest { name: name.into() }, token)).await.map(|_| ())),
    ));
    out.push((
        "delete",
        norm(
            c.delete_secret(authed(pb::DeleteSecretRequest { name: name.into(), destroy: false }, token))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "destroy",
        norm(
            c.delete_secret(authed(pb::DeleteSecretRequest { name: name.into(), destroy: true }, token))
                .await
                .map(|_| ()),
        ),
    ));
    out.push(("delete_versions", norm(c.delete_versions(authed(versions(), token)).await.map(|_| ()))));
    out.push(("undelete_versions", norm(c.undelete_versions(authed(versions(), token)).await.map(|_| ()))));
    out.push(("destroy_versions", norm(c.destroy_versions(authed(versions(), token)).await.map(|_| ()))));
    out.push((
        "rotation_get",
        norm(c.get_rotation(authed(pb::GetRotationRequest { name: name.into() }, token)).await.map(|_| ())),
    ));
    let set = pb::SetRotationRequest { name: name.into(), every_secs: 86_400, generator: "random:8".into() };
    out.push(("rotation_set", norm(c.set_rotation(authed(set, token)).await.map(|_| ()))));
    out.push((
        "rotation_clear",
        norm(c.clear_rotation(authed(pb::ClearRotationRequest { name: name.into() }, token)).await.map(|_| ())),
    ));
    out.push((
        "rotate",
        norm(c.rotate_secret(authed(pb::RotateSecretRequest { name: name.into() }, token)).await.map(|_| ())),
    ));
    out
}

/// A token that may act on names but not list them cannot tell from lifecycle, rotation or
/// versions calls whether a name exists: it gets the same PERMISSION_DENIED for a name that
/// exists (with a rotation policy) and one that does not; so does a token with no grant there.
/// With `list` as well, the calls work.
#[test]
fn lifecycle_and_rotation_calls_tell_a_token_without_list_nothing_about_existence() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        let url = n.url();
        let roles = [
            ("elsewhere", "list:other/*"),
            ("acts", "delete,update,destroy,rotate:app/*"),
            ("acts-and-lists", "delete,update,destroy,rotate,list:app/*"),
        ];
        for (role, grant) in roles {
            n.ctl(&["role", "create", role, "--grant", grant]);
            let token = token_for(&n, &format!("t-{role}"), role);
            let exists = format!("app/{role}");
            n.ctl(&["secret", "put", &exists, "--value", "v"]);
            n.ctl(&["secret", "rotation", "set", &exists, "--every", "1d", "--generator", "random:8"]);
            let on_existing = answers(&url, &token, &exists).await;
            let on_missing = answers(&url, &token, &format!("app/missing-{role}")).await;
            if role == "acts-and-lists" {
                let worked: Vec<_> = on_existing.iter().filter(|(_, (code, _))| *code == Code::Ok).collect();
                assert!(worked.len() >= 8, "with list, the calls work: {on_existing:?}");
                assert!(on_missing.iter().any(|(_, (code, _))| *code == Code::NotFound), "{on_missing:?}");
                continue;
            }
            for ((call, a), (_, b)) in on_existing.iter().zip(&on_missing) {
                assert_eq!(a, b, "{role} {call}: the answer tells whether the name exists");
                assert_eq!(a.0, Code::PermissionDenied, "{role} {call}: {a:?}");
            }
            assert_eq!(n.ctl(&["secret", "get", &exists]), "v", "{role}: nothing changed");
        }
    });
}

/// A check-and-set put that no version matches writes nothing; to a token that may write but
/// not list the name, its refusal must not name the current version (0 would say the name
/// does not exist). With `list`, it does.
#[test]
fn a_failed_check_and_set_names_the_current_version_only_to_a_token_that_may_list() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        n.ctl(&["role", "create", "writes", "--grant", "create,update:app/*"]);
        n.ctl(&["role", "create", "writes-and-lists", "--grant", "create,update,list:app/*"]);
        n.ctl(&["secret", "put", "app/there", "--value", "v"]);
        let mut c = secrets_client(&n.url()).await;
        for role in ["writes", "writes-and-lists"] {
            let token = token_for(&n, &format!("t-{role}"), role);
            let mut said = Vec::new();
            for name in ["app/there", "app/not-there"] {
                let put = pb::PutSecretRequest {
                    name: name.into(),
                    value: b"x".to_vec(),
                    expected_version: Some(u64::MAX),
                    ..Default::default()
                };
                let e = c.put_secret(authed(put, &token)).await.expect_err("no version matches");
                assert_eq!(e.code(), Code::FailedPrecondition, "{role} {name}: {e:?}");
                said.push(e.message().replace(name, "NAME"));
            }
            if role == "writes" {
                assert_eq!(said[0], said[1], "the answer tells whether the name exists");
            } else {
                assert!(
                    said[0].contains("current version is 1") && said[1].contains("current version is 0"),
                    "{said:?}"
                );
            }
        }
        assert_eq!(n.ctl(&["secret", "get", "app/there"]), "v", "nothing was written");
    });
}

/// Every page of `ListRotations` as `token` sees it: (names, next_page_token) per page.
async fn rotation_pages(url: &str, token: &str, prefix: &str, page_size: u32) -> Vec<(Vec<String>, String)> {
    let mut c = secrets_client(url).await;
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = pb::ListRotationsRequest { prefix: prefix.into(), page_size, page_token: page_token.clone() };
        let page = c.list_rotations(authed(req, token)).await.expect("list rotations").into_inner();
        assert!(page.rotations.len() <= page_size as usize, "{page:?}");
        let names = page.rotations.iter().map(|r| r.name.clone()).collect();
        page_token = page.next_page_token.clone();
        out.push((names, page.next_page_token));
        assert!(out.len() < 100, "a listing of a few policies never ends: {out:?}");
        if page_token.is_empty() {
            return out;
        }
    }
}

async fn rotations_with(url: &str, token: &str, prefix: &str, page_token: &str) -> Result<Vec<String>, tonic::Status> {
    let req = pb::ListRotationsRequest { prefix: prefix.into(), page_size: 1, page_token: page_token.into() };
    let page = secrets_client(url).await.list_rotations(authed(req, token)).await?.into_inner();
    Ok(page.rotations.into_iter().map(|r| r.name).collect())
}

/// `ListRotations` shows a token the policies of the names it may list and no others (its
/// pages and page tokens are the same before and after policies it may not see appear), each
/// as `GetRotation` shows it, a failing one with its failures and last error; it pages, and
/// refuses a page token it did not issue: garbage, a `ListSecrets` token, one of another
/// prefix.
#[test]
fn rotation_listings_show_only_the_policies_the_token_may_list_a_page_at_a_time() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        let url = n.url();
        n.ctl(&["role", "create", "app-lister", "--grant", "list:app/*"]);
        n.ctl(&["role", "create", "app-writer", "--grant", "create,update:app/*"]);
        let lister = token_for(&n, "rot-lister", "app-lister");
        let writer = token_for(&n, "rot-writer", "app-writer");
        let set = |name: &str, every: &str| {
            n.ctl(&["secret", "put", name, "--value", "v"]);
            n.ctl(&["secret", "rotation", "set", name, "--every", every, "--generator", "random:8"]);
        };
        let app = ["app/r1", "app/r2", "app/r3"];
        for name in app {
            set(name, "1d");
        }
        n.ctl(&["secret", "put", "app/no-policy", "--value", "v"]);
        let seen_before: Vec<_> = {
            let mut v = Vec::new();
            for size in [1000, 1, 2] {
                v.push((size, rotation_pages(&url, &lister, "", size).await));
            }
            v
        };
        let names: Vec<String> = seen_before[0].1.iter().flat_map(|(names, _)| names.clone()).collect();
        assert_eq!(names, app, "only the policies under app/, in name order");
        assert_eq!(seen_before[1].1.len(), 3, "pages of one: {:?}", seen_before[1].1);
        assert_eq!(seen_before[2].1.iter().map(|(n, _)| n.len()).collect::<Vec<_>>(), [2, 1]);

        // Policies the token may not list, around its names: nothing it sees changes.
        for name in ["aaa/first", "app0/between", "ops/o1", "ops/o2"] {
            set(name, "12h");
        }
        for (size, want) in &seen_before {
            assert_eq!(&rotation_pages(&url, &lister, "", *size).await, want, "page size {size}");
        }
        assert_eq!(rotation_pages(&url, &lister, "ops/", 10).await, [(Vec::<String>::new(), String::new())]);
        let all: Vec<String> =
            rotation_pages(&url, &n.token, "", 2).await.into_iter().flat_map(|(names, _)| names).collect();
        assert_eq!(all, ["aaa/first", "app/r1", "app/r2", "app/r3", "app0/between", "ops/o1", "ops/o2"]);

        // Each entry is the policy as GetRotation tells it: period, generator, next due,
        // failures and last error.
        let mut c = secrets_client(&url).await;
        let req = pb::ListRotationsRequest { prefix: "app/".into(), ..Default::default() };
        let listed = c.list_rotations(authed(req, &lister)).await.expect("list").into_inner().rotations;
        for info in &listed {
            let got = c.get_rotation(authed(pb::GetRotationRequest { name: info.name.clone() }, &lister)).await;
            assert_eq!(&got.expect("get rotation").into_inner(), info);
            assert_eq!((info.every_secs, info.generator.as_str(), info.failures), (86_400, "random:8", 0));
            assert!(info.next_due_ms > vault_core::time::now_ms(), "{info:?}");
        }

        // Only tokens this listing issued, for this prefix, are taken.
        let app_token = rotation_pages(&url, &lister, "app/", 1).await[0].1.clone();
        assert_eq!(rotations_with(&url, &lister, "app/", &app_token).await.expect("its own token"), ["app/r2"]);
        let secrets_req = pb::ListSecretsRequest { prefix: "app/".into(), page_size: 1, page_token: String::new() };
        let secrets_token = c.list_secrets(authed(secrets_req, &lister)).await.expect("list").into_inner();
        assert!(!secrets_token.next_page_token.is_empty());
        for (prefix, bad) in [
            ("", "garbage"),
            ("", "ops/o1"),
            ("", "v1.AAAAAAAAAAAAAAAA"),
            ("app/", secrets_token.next_page_token.as_str()),
            ("", app_token.as_str()),
        ] {
            let e = rotations_with(&url, &lister, prefix, bad).await.expect_err(&format!("page token {bad:?} taken"));
            assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        }
        // A token that may list nothing learns nothing.
        let e = rotations_with(&url, &writer, "", "").await.expect_err("no list grant");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

        // The CLI follows the pages.
        let out = must_vaultctl(&url, Some(&lister), &["--output", "json", "secret", "rotation", "list"]);
        let out: serde_json::Value = serde_json::from_str(&out).expect("json");
        let names: Vec<&str> = out.as_array().expect("array").iter().filter_map(|r| r["name"].as_str()).collect();
        assert_eq!(names, app);
        let table = must_vaultctl(&url, Some(&n.token), &["secret", "rotation", "list", "--prefix", "ops/"]);
        assert!(table.starts_with("NAME") && table.contains("ops/o1") && !table.contains("app/r1"), "{table}");

        // A failing policy is listed with its failures and last error (no live version left).
        set("app/failing", "1d");
        n.ctl(&["secret", "delete", "app/failing"]);
        let rotate = n.node.vaultctl(Some(&n.token), &["secret", "rotate", "app/failing"]);
        assert!(!rotate.status.success(), "rotating a secret without a live version fails");
        let req = pb::ListRotationsRequest { prefix: "app/failing".into(), ..Default::default() };
        let failing = c.list_rotations(authed(req, &lister)).await.expect("list").into_inner().rotations;
        assert_eq!(failing.len(), 1, "{failing:?}");
        assert!(failing[0].failures >= 1 && !failing[0].last_error.is_empty(), "{failing:?}");
        let table = must_vaultctl(&url, Some(&lister), &["secret", "rotation", "list", "--prefix", "app/failing"]);
        assert!(table.contains(&failing[0].last_error), "{table}");
    });
}
