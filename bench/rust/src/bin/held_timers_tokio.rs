//! Tokio holding N timers (default 1000) that sleep from 1 ms to 60 s,
//! spread evenly on a log scale, for S seconds (default 10): the process
//! CPU of a runtime that only waits. The same work as treadle_bench's
//! held_timers; prints one JSON line in its shape.
//!
//!     held_timers_tokio current|multi [N] [S]
use std::env;
use std::time::{Duration, Instant};

/// The process's CPU time so far (user + system), seconds.
fn process_cpu_secs() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) as f64
        + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) as f64 / 1e6
}

fn main() {
    let args: Vec<String> = env::args().collect();
    let flavor = args.get(1).map(String::as_str).unwrap_or("current");
    let n: usize = args.get(2).map(|s| s.parse().expect("N")).unwrap_or(1000);
    let hold: f64 = args.get(3).map(|s| s.parse().expect("S")).unwrap_or(10.0);
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
            eprintln!("usage: held_timers_tokio current|multi [N] [S]");
            std::process::exit(2);
        }
    };
    let rt = rt.expect("runtime");
    let line = rt.block_on(async move {
        tokio::spawn(async move {
            let cpu0 = process_cpu_secs();
            let t0 = Instant::now();
            let fired = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for i in 0..n {
                let ms = if n > 1 { 60000f64.powf(i as f64 / (n - 1) as f64) } else { 1.0 };
                let fired = fired.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_nanos((ms * 1e6) as u64)).await;
                    fired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
            tokio::time::sleep(Duration::from_secs_f64(hold)).await;
            let cpu = process_cpu_secs() - cpu0;
            let secs = t0.elapsed().as_secs_f64();
            format!(
                "{{\"runtime\":\"{}\",\"bench\":\"held_timers\",\"n\":{},\"secs\":{:.3},\"fired\":{},\"cpu_secs\":{:.4},\"cpu_pct\":{:.3}}}",
                name,
                n,
                secs,
                fired.load(std::sync::atomic::Ordering::Relaxed),
                cpu,
                100.0 * cpu / secs
            )
        })
        .await
        .unwrap()
    });
    println!("{line}");
}
