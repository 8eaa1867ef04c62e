//! Plain network probes: TCP connect latency and HTTP requests (reqwest, rustls).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::BackendError;
use crate::value::Value;

/// Connects to `address` (`host:port`); the value is the connect time.
pub async fn tcp_connect(address: &str, timeout: Duration) -> Result<Duration, BackendError> {
    let start = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(BackendError::Unreachable(format!("{address}: {e}"))),
        Err(_) => Err(BackendError::Timeout(format!(
            "{address}: no connection within {}",
            crate::runbook::units::format_duration(timeout)
        ))),
    }
}

/// An HTTP request, resolved.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// URL.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<String>,
    /// Expected status (default any 2xx).
    pub status: Option<u16>,
    /// A CA certificate to trust (PEM bytes).
    pub ca: Option<Vec<u8>>,
    /// Accept any certificate.
    pub insecure: bool,
    /// Time limit.
    pub timeout: Duration,
}

/// Sends the request; the value is `{status, body, json, latency, headers}`. A status
/// other than the expected one is an error.
pub async fn http(request: &HttpRequest) -> Result<Value, BackendError> {
    let mut builder = reqwest::Client::builder()
        .timeout(request.timeout)
        .danger_accept_invalid_certs(request.insecure);
    if let Some(ca) = &request.ca {
        let cert = reqwest::Certificate::from_pem(ca)
            .map_err(|e| BackendError::Config(format!("CA certificate: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder
        .build()
        .map_err(|e| BackendError::Config(e.to_string()))?;
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|e| BackendError::Config(e.to_string()))?;
    let mut req = client.request(method, &request.url);
    for (k, v) in &request.headers {
        req = req.header(k, v);
    }
    if let Some(body) = &request.body {
        req = req.body(body.clone());
    }
    let start = Instant::now();
    let response = req.send().await.map_err(|e| {
        if e.is_timeout() {
            BackendError::Timeout(format!("{}: {e}", request.url))
        } else {
            BackendError::Unreachable(format!("{}: {e}", without_query(&request.url)))
        }
    })?;
    let status = response.status().as_u16();
    let mut headers = BTreeMap::new();
    for (k, v) in response.headers() {
        headers.insert(
            k.as_str().to_owned(),
            Value::Text(v.to_str().unwrap_or("").to_owned()),
        );
    }
    let body = response
        .text()
        .await
        .map_err(|e| BackendError::Unreachable(e.to_string()))?;
    let latency = start.elapsed();
    let ok = match request.status {
        Some(expected) => status == expected,
        None => (200..300).contains(&status),
    };
    if !ok {
        let expected = request
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "2xx".into());
        let snippet: String = body.chars().take(200).collect();
        return Err(BackendError::Command(format!(
            "HTTP {status} (expected {expected}): {snippet}"
        )));
    }
    let mut out = BTreeMap::new();
    out.insert("status".into(), Value::Number(f64::from(status)));
    out.insert(
        "json".into(),
        serde_json::from_str::<serde_json::Value>(&body)
            .map(json_value)
            .unwrap_or(Value::Null),
    );
    out.insert("body".into(), Value::Text(body));
    out.insert("latency".into(), Value::Duration(latency));
    out.insert("headers".into(), Value::Object(headers));
    Ok(Value::Object(out))
}

fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// JSON as a value.
pub fn json_value(json: serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => n.as_f64().map(Value::Number).unwrap_or(Value::Null),
        serde_json::Value::String(s) => Value::Text(s),
        serde_json::Value::Array(items) => Value::List(items.into_iter().map(json_value).collect()),
        serde_json::Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, json_value(v))).collect())
        }
    }
}
