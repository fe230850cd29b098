//! Tokio spawning and waiting for N processes (default 1000) of a program
//! (default /bin/true), at most K (default 64) at once: K tasks each take
//! the next number from a shared counter, spawn the program with
//! `tokio::process::Command` and wait for it, until N are done. The same
//! work as treadle_bench's spawn_processes; prints one JSON line in its
//! shape.
//!
//!     processes_tokio current|multi [N] [K] [PROGRAM]
//!
//! secs runs from the first spawn to the last exit; processes_per_sec is N
//! over it. cpu_self_secs is this process's CPU over that time (getrusage
//! RUSAGE_SELF, user + system: the parent only), cpu_children_secs the CPU
//! of the children it reaped meanwhile (RUSAGE_CHILDREN).
use std::env;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn cpu_secs(who: libc::c_int) -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) as f64
        + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) as f64 / 1e6
}

fn main() {
    let args: Vec<String> = env::args().collect();
    let flavor = args.get(1).map(String::as_str).unwrap_or("current");
    let n: usize = args.get(2).map(|s| s.parse().expect("N")).unwrap_or(1000);
    let k: usize = args.get(3).map(|s| s.parse().expect("K")).unwrap_or(64);
    let program = args.get(4).cloned().unwrap_or_else(|| "/bin/true".to_string());
    let (rt, name) = match flavor {
        "current" => (
            tokio::runtime::Builder::new_current_thread().enable_all().build(),
            "tokio-current",
        ),
        "multi" => (
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
            "tokio-multi2",
        ),
        _ => {
            eprintln!("usage: processes_tokio current|multi [N] [K] [PROGRAM]");
            std::process::exit(2);
        }
    };
    let rt = rt.expect("runtime");
    let line = rt.block_on(async move {
        tokio::spawn(async move {
            let next = Arc::new(AtomicUsize::new(0));
            let program = Arc::new(program);
            let self0 = cpu_secs(libc::RUSAGE_SELF);
            let kids0 = cpu_secs(libc::RUSAGE_CHILDREN);
            let t0 = Instant::now();
            let mut runners = Vec::with_capacity(k);
            for _ in 0..k.min(n) {
                let next = next.clone();
                let program = program.clone();
                runners.push(tokio::spawn(async move {
                    let mut failed = 0usize;
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let status = tokio::process::Command::new(program.as_str())
                            .spawn()
                            .expect("spawn")
                            .wait()
                            .await
                            .expect("wait");
                        failed += !status.success() as usize;
                    }
                    failed
                }));
            }
            let mut failed = 0;
            for r in runners {
                failed += r.await.unwrap();
            }
            let secs = t0.elapsed().as_secs_f64();
            format!(
                "{{\"runtime\":\"{}\",\"bench\":\"spawn_processes\",\"n\":{},\"in_flight\":{},\"secs\":{:.4},\"processes_per_sec\":{:.1},\"failed\":{},\"cpu_self_secs\":{:.4},\"cpu_children_secs\":{:.4}}}",
                name,
                n,
                k,
                secs,
                n as f64 / secs,
                failed,
                cpu_secs(libc::RUSAGE_SELF) - self0,
                cpu_secs(libc::RUSAGE_CHILDREN) - kids0
            )
        })
        .await
        .unwrap()
    });
    println!("{line}");
}
