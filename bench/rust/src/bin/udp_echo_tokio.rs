//! A UDP echo server on Tokio, as a Tokio user writes it: one task that
//! loops `recv_from` then `send_to` on one socket. The peer of treadle's
//! examples/c/udp_echo (bench/udp_compare.py). Tokio 1.24 has no batched
//! datagram call (recvmmsg/sendmmsg), so there is no batched variant.
//!
//!     udp_echo_tokio PORT current|multi [WORKERS]
//!
//! Binds 127.0.0.1:PORT, says "listening on ADDR (udp)", and serves until
//! SIGTERM or SIGINT, when it says how many datagrams it echoed.
use std::env;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};

fn main() {
    let args: Vec<String> = env::args().collect();
    let port: u16 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: udp_echo_tokio PORT current|multi [WORKERS]");
        std::process::exit(2)
    });
    let flavor = args.get(2).map(String::as_str).unwrap_or("current");
    let workers: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    let rt = match flavor {
        "current" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build(),
        _ => {
            eprintln!("usage: udp_echo_tokio PORT current|multi [WORKERS]");
            std::process::exit(2)
        }
    }
    .expect("runtime");
    let echoed = Arc::new(AtomicU64::new(0));
    let count = echoed.clone();
    rt.block_on(async move {
        let sock = UdpSocket::bind(("127.0.0.1", port)).await.expect("bind");
        println!("listening on {} (udp)", sock.local_addr().unwrap());
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT");
        let server = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let (n, peer) = match sock.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("recv: {e}");
                        continue;
                    }
                };
                match sock.send_to(&buf[..n], peer).await {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => eprintln!("send: {e}"),
                }
            }
        });
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        server.abort();
    });
    println!("echoed {} datagrams", echoed.load(Ordering::Relaxed));
    println!("bye");
}
