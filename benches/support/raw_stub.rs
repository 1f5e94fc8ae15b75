//! The cheapest OpenAI endpoint that still speaks HTTP/1.1 properly: keep-alive, pipelined
//! requests parsed with httparse, bodies skipped by their Content-Length, every answer a
//! fixed byte string written in one syscall. It shares the machine's cores with the tool
//! being measured, so the less it costs, the more a benchmark shows the tool rather than
//! the endpoint.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::STREAM;

const MODELS: &str = r#"{"object":"list","data":[{"id":"stub-model","object":"model"}]}"#;

/// Starts the endpoint on a loopback port, on its own runtime.
pub fn start_raw_stub() -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                tokio::spawn(serve(socket));
            }
        });
        addr
    });
    (runtime, addr)
}

fn answer(content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers one connection's requests until it closes or sends something that is not HTTP.
async fn serve(mut socket: TcpStream) {
    let completion = answer("text/event-stream", STREAM);
    let models = answer("application/json", MODELS);
    let not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec();
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = Vec::with_capacity(4 * 1024);
    loop {
        match socket.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            let head = match request.parse(&input) {
                Ok(httparse::Status::Complete(head)) => head,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            };
            let body = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0usize);
            if input.len() < head + body {
                break;
            }
            output.extend_from_slice(match (request.method, request.path) {
                (Some("POST"), Some("/v1/completions")) => &completion,
                (Some("GET"), Some("/v1/models")) => &models,
                _ => &not_found,
            });
            input.advance(head + body);
        }
        if !output.is_empty() {
            if socket.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        input.reserve(4096);
    }
}
