//! The S3 destination of scheduled backups (`VAULT_BACKUP_S3_BUCKET`, `_PREFIX`).
//!
//! Region and credentials come from the AWS SDK's default chain, as for the KMS backend (see
//! `kms::aws`); `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`) points it elsewhere (an
//! S3-compatible store, moto in the tests), with path-style addressing. One backup is one
//! PutObject, which S3 makes visible whole or not at all; a HeadObject then confirms its size.
//! The HTTP client is rustls on ring, like the KMS client's.

use std::path::Path;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use tokio::io::AsyncWriteExt;

use super::dest::{DestError, Entry};
use crate::config::S3Config;

pub struct S3Dest {
    client: Client,
    bucket: String,
    prefix: String,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn s3_error(op: &'static str, key: &str, e: impl std::error::Error) -> DestError {
    DestError::S3 { op, key: key.to_string(), why: DisplayErrorContext(&e).to_string() }
}

impl S3Dest {
    /// Builds the client from the environment (nothing is called until the first backup).
    pub async fn new(config: &S3Config) -> anyhow::Result<Self> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(600))
            .build();
        let sdk = crate::aws_env::sdk_config(&timeouts, "VAULT_BACKUP_S3_BUCKET").await?;
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
            .timeout_config(timeouts)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")) {
            conf = conf.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(S3Dest {
            client: Client::from_conf(conf.build()),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
        })
    }

    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// One PutObject of the whole file, then a HeadObject that must show its size.
    pub async fn put(&self, name: &str, file: std::fs::File) -> Result<u64, DestError> {
        use std::io::{Seek, SeekFrom};
        let key = self.key(name);
        let mut file = file;
        let size = file
            .seek(SeekFrom::End(0))
            .and_then(|n| file.seek(SeekFrom::Start(0)).map(|_| n))
            .map_err(|source| DestError::Io { what: "read the backup for", path: key.clone(), source })?;
        let body = ByteStream::read_from()
            .file(tokio::fs::File::from_std(file))
            .build()
            .await
            .map_err(|e| s3_error("PutObject", &key, e))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_length(size as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_error("PutObject", &key, e))?;
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| s3_error("HeadObject", &key, e))?;
        match head.content_length() {
            Some(n) if n as u64 == size => Ok(size),
            other => Err(DestError::S3 {
                op: "HeadObject",
                key,
                why: format!("the object holds {other:?} bytes, {size} were written"),
            }),
        }
    }

    /// GetObject into `to`, refused past `max_bytes`.
    pub async fn fetch(&self, name: &str, to: &Path, max_bytes: u64) -> Result<(), DestError> {
        let key = self.key(name);
        let got = match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(got) => got,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(DestError::NotFound(name.to_string()))
            }
            Err(e) => return Err(s3_error("GetObject", &key, e)),
        };
        if got.content_length().is_some_and(|n| n as u64 > max_bytes) {
            return Err(DestError::TooLarge(name.to_string(), max_bytes >> 20));
        }
        let io = |what| move |source| DestError::Io { what, path: to.display().to_string(), source };
        let mut out = tokio::fs::File::create(to).await.map_err(io("create"))?;
        let mut body = got.body;
        let mut written = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| s3_error("GetObject", &key, e))? {
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(DestError::TooLarge(name.to_string(), max_bytes >> 20));
            }
            out.write_all(&chunk).await.map_err(io("write"))?;
        }
        out.flush().await.map_err(io("write"))?;
        Ok(())
    }

    /// The objects under the prefix (their names without it; deeper "folders" skipped).
    pub async fn list(&self) -> Result<Vec<Entry>, DestError> {
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&self.prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", &self.prefix, e))?;
            for o in page.contents() {
                let Some(name) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) else { continue };
                if !name.contains('/') {
                    out.push(Entry { name: name.to_string(), size: o.size().unwrap_or(0).max(0) as u64 });
                }
            }
        }
        Ok(out)
    }

    pub async fn delete(&self, name: &str) -> Result<(), DestError> {
        let key = self.key(name);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", &key, e))?;
        Ok(())
    }
}
