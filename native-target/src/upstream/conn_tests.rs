//! A connection's buffers over a real loopback socket.

use std::future::poll_fn;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A connection to a loopback peer, and the peer's end.
async fn pair() -> (Box<Conn>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (theirs, _) = listener.accept().await.unwrap();
    (Conn::new(Stream::Plain(ours)), theirs)
}

#[tokio::test]
async fn an_uploads_chunk_lines_do_not_pile_up() {
    let (mut conn, mut peer) = pair().await;
    let drain = tokio::spawn(async move {
        let mut sink = Vec::new();
        peer.read_to_end(&mut sink).await.unwrap();
        sink.len()
    });
    let pieces = 20_000;
    let body = RequestBody::of_pieces((0..pieces).map(|_| Bytes::from_static(b"x")));
    let mut out = Outgoing::start(
        &mut conn,
        &Method::POST,
        "/api/chat",
        &http::HeaderMap::new(),
        body,
    );
    // Sent as a body of unknown length (a client's chunked upload): its
    // pieces come one after the other, each written before the next is
    // taken.
    conn.write.clear();
    let empty = http::HeaderMap::new();
    out.sending = h1::write_head(
        &Method::POST,
        "/api/chat",
        &empty,
        BodyShape::Unknown,
        &mut conn.write,
    );
    assert_eq!(out.sending, Sending::Chunked);
    assert!(poll_fn(|cx| out.poll_write(&mut conn, cx)).await.is_ok());
    assert!(out.sent);
    // Each piece's `1\r\n` went out with it and was not kept: `write`
    // never held more than a head and a chunk line or two.
    assert!(
        conn.write.capacity() < 1024,
        "write grew to {} bytes",
        conn.write.capacity()
    );
    drop(conn);
    let head = "POST /api/chat HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n".len();
    let chunks = pieces * "1\r\nx\r\n".len() + "0\r\n\r\n".len();
    assert_eq!(drain.await.unwrap(), head + chunks);
}

#[tokio::test]
async fn a_kept_connection_does_not_keep_a_large_downloads_buffer() {
    let (mut conn, mut peer) = pair().await;
    let size = 4 * MAX_READ_SIZE;
    let send = tokio::spawn(async move {
        peer.write_all(&vec![b'a'; size]).await.unwrap();
        peer
    });
    // Read as a body is: what arrived is taken off, the reads grow.
    let mut got = 0;
    while got < size {
        got += poll_fn(|cx| conn.poll_fill(cx)).await.unwrap();
        drop(conn.read.split());
    }
    let _peer = send.await.unwrap();
    assert!(conn.read_size > READ_SIZE, "the reads grew");
    // As after a last read that filled its buffer exactly: nothing left to
    // read into (`capacity` 0), yet the buffer owns a large allocation.
    conn.read = BytesMut::with_capacity(MAX_READ_SIZE);
    conn.read.resize(MAX_READ_SIZE, b'a');
    drop(conn.read.split());
    assert_eq!(conn.read.capacity(), 0);
    assert!(conn.keepable());
    assert_eq!(conn.read_size, READ_SIZE);
    // The allocation is gone: a buffer that still owned it would take it
    // back here.
    conn.read.reserve(1);
    assert!(
        conn.read.capacity() <= READ_SIZE,
        "kept {} bytes",
        conn.read.capacity()
    );
}

#[tokio::test]
async fn bytes_past_an_answer_are_never_kept() {
    let (mut conn, mut peer) = pair().await;
    peer.write_all(&vec![b'a'; 100_000]).await.unwrap();
    peer.write_all(b"JUNK").await.unwrap();
    let mut got = 0;
    while got < 100_004 {
        got += poll_fn(|cx| conn.poll_fill(cx)).await.unwrap();
        // The answer's 100,000 bytes taken; what follows stays.
        let take = conn
            .read
            .len()
            .min(100_000usize.saturating_sub(got - conn.read.len()));
        drop(conn.read.split_to(take));
    }
    assert_eq!(&conn.read[..], b"JUNK");
    assert!(!conn.keepable());
}
