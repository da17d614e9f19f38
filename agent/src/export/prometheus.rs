//! An optional Prometheus scrape endpoint with the same metrics as OTLP, for users without a
//! collector. A minimal HTTP/1.1 responder on the agent's runtime: `GET /metrics` only.
use std::net::SocketAddr;

use prometheus::{Encoder, Registry, TextEncoder};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

pub fn render(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    out
}

/// Binds now (so a bad address fails at start) and serves in a background task.
pub async fn serve(addr: SocketAddr, registry: Registry) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut len = 0;
                // Read the request head; scrapers send no body on GET.
                while len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..len]);
                let target = head.split_whitespace().nth(1).unwrap_or("");
                let (status, body, content_type) =
                    if head.starts_with("GET ") && target.split('?').next() == Some("/metrics") {
                        ("200 OK", render(&registry), TextEncoder::new().format_type().to_string())
                    } else {
                        ("404 Not Found", b"only GET /metrics is served\n".to_vec(), "text/plain".to_string())
                    };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(local)
}
