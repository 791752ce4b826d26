//! The AWS SDK's shared configuration for the KMS backend and the S3 backup destination: the
//! default chain for region and credentials, one HTTP client on rustls with ring (no aws-lc:
//! two crypto providers make rustls refuse to pick one), and the caller's time limits, which
//! the chains' own calls (STS, container and instance metadata) use too.

use anyhow::anyhow;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The default chain's configuration, carrying the HTTP client and `timeouts` to the service
/// clients built from it; `Err` naming `setting` when no region is found.
pub async fn sdk_config(timeouts: &TimeoutConfig, setting: &str) -> anyhow::Result<SdkConfig> {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let sdk =
        aws_config::defaults(BehaviorVersion::latest()).http_client(http).timeout_config(timeouts.clone()).load().await;
    if sdk.region().is_none() {
        return Err(anyhow!("{setting} needs a region: AWS_REGION, or `region` in the AWS config file's profile"));
    }
    Ok(sdk)
}
