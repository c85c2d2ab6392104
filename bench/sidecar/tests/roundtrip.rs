//! The sidecar served in-process on a temporary socket: an echo comes back byte for byte, a
//! terminal failure comes back as outcome 2 with an error envelope, and pipelined requests are
//! matched to their answers by id.

use std::path::PathBuf;
use std::sync::Arc;

use tandem::envelope::{self, Envelope};
use tandem::layout::{TANDEM_OUTCOME_ACK, TANDEM_OUTCOME_TERM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// A socket path in a directory of the test's own (tests run in parallel, and in several
/// processes at once under `cargo test --workspace`).
fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-sidecar-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("s.sock")
}

fn request(id: u64, ty: &str, data: &[u8]) -> Vec<u8> {
    let id_text = id.to_string();
    let env = envelope::encode_to_vec(&Envelope {
        id: &id_text,
        source: "/sidecar-test",
        ty,
        data,
        ..Envelope::default()
    });
    let mut frame = Vec::with_capacity(12 + env.len());
    frame.extend_from_slice(&u32::try_from(8 + env.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&env);
    frame
}

async fn response(conn: &mut UnixStream) -> (u64, u8, Vec<u8>) {
    let mut header = [0u8; 13];
    conn.read_exact(&mut header).await.unwrap();
    let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
    let id = u64::from_be_bytes(header[4..12].try_into().unwrap());
    let mut body = vec![0u8; len - 9];
    conn.read_exact(&mut body).await.unwrap();
    (id, header[12], body)
}

/// Serves on a fresh socket, runs `client` against it, then stops both runtimes the way the
/// binary does (the handlers' runtime last, outside any tokio context).
fn with_server(name: &str, client: impl AsyncFnOnce(UnixStream)) {
    let handlers = Arc::new(tandem_sidecar::start_runtime(2).unwrap());
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_io()
        .enable_time()
        .build()
        .unwrap();
    let path = socket_path(name);
    let _ = std::fs::remove_file(&path);
    io.block_on(async {
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(tandem_sidecar::serve(listener, handlers.clone()));
        client(UnixStream::connect(&path).await.unwrap()).await;
    });
    io.shutdown_timeout(std::time::Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    drop(handlers);
}

#[test]
fn echo_comes_back_byte_for_byte() {
    with_server("echo", async |mut conn| {
        let payload: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
        conn.write_all(&request(42, "demo.echo", &payload))
            .await
            .unwrap();
        let (id, outcome, body) = response(&mut conn).await;
        assert_eq!(id, 42);
        assert_eq!(u32::from(outcome), TANDEM_OUTCOME_ACK);
        assert_eq!(body, payload);
    });
}

#[test]
fn term_comes_back_with_an_error_envelope() {
    with_server("term", async |mut conn| {
        conn.write_all(&request(7, "demo.fail", b"term"))
            .await
            .unwrap();
        let (id, outcome, body) = response(&mut conn).await;
        assert_eq!(id, 7);
        assert_eq!(u32::from(outcome), TANDEM_OUTCOME_TERM);
        let err = envelope::decode_error(&body).unwrap();
        assert_eq!(err.code, "invalid");
        assert_eq!(err.handler, "fail");
    });
}

#[test]
fn pipelined_requests_are_answered_by_id() {
    with_server("pipelined", async |mut conn| {
        // One write carrying many frames, then every answer, in whatever order they finish.
        let mut frames = Vec::new();
        for id in 0..200u64 {
            frames.extend(request(id, "demo.echo", id.to_string().as_bytes()));
        }
        conn.write_all(&frames).await.unwrap();
        let mut seen = [false; 200];
        for _ in 0..200 {
            let (id, outcome, body) = response(&mut conn).await;
            assert_eq!(u32::from(outcome), TANDEM_OUTCOME_ACK);
            assert_eq!(body, id.to_string().as_bytes());
            assert!(
                !std::mem::replace(&mut seen[id as usize], true),
                "id {id} twice"
            );
        }
    });
}

#[test]
fn an_oversized_frame_closes_the_connection() {
    with_server("oversized", async |mut conn| {
        let len = u32::try_from(tandem_sidecar::MAX_FRAME + 1).unwrap();
        conn.write_all(&len.to_be_bytes()).await.unwrap();
        conn.write_all(&[0u8; 8]).await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0, "want EOF");
    });
}

#[test]
fn a_client_gone_mid_flight_leaves_the_server_serving() {
    with_server("gone", async |gone| {
        // 500 requests of 4 KiB are more than the socket buffers hold: the server is still
        // writing answers when this client hangs up without reading any.
        let mut gone = gone;
        let mut frames = Vec::new();
        for id in 0..500u64 {
            frames.extend(request(id, "demo.echo", &[7u8; 4096]));
        }
        gone.write_all(&frames).await.unwrap();
        let path = gone.peer_addr().unwrap().as_pathname().unwrap().to_owned();
        drop(gone);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;

        let mut conn = UnixStream::connect(&path).await.unwrap();
        conn.write_all(&request(1, "demo.echo", b"still here"))
            .await
            .unwrap();
        let (id, outcome, body) = response(&mut conn).await;
        assert_eq!((id, u32::from(outcome)), (1, TANDEM_OUTCOME_ACK));
        assert_eq!(body, b"still here");
    });
}
