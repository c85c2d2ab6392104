//! `tandem-sidecar --socket PATH [--workers N] [--io-threads N]`: serves tandem's demo
//! handlers over a Unix domain socket (the protocol is in the library's documentation) until
//! SIGTERM or SIGINT. A benchmark contender, not part of tandem.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: tandem-sidecar --socket PATH [--workers N] [--io-threads N]
  --socket PATH     the Unix socket to listen on (an existing socket file is replaced)
  --workers N       tokio workers running the handlers (default 2)
  --io-threads N    tokio workers doing the socket I/O (default 1)";

struct Args {
    socket: PathBuf,
    workers: usize,
    io_threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut socket = None;
    let mut workers = 2;
    let mut io_threads = 1;
    let mut args = std::env::args_os().skip(1);
    while let Some(flag) = args.next() {
        let flag = flag.to_string_lossy().into_owned();
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let count = || {
            value
                .to_str()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&n| (1..=256).contains(&n))
                .ok_or_else(|| format!("{flag}: want a number 1..=256, got {value:?}"))
        };
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(&value)),
            "--workers" => workers = count()?,
            "--io-threads" => io_threads = count()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let socket = socket.ok_or("--socket is required")?;
    Ok(Args {
        socket,
        workers,
        io_threads,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("tandem-sidecar: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let handlers = Arc::new(tandem_sidecar::start_runtime(args.workers)?);
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.io_threads)
        .thread_name("sidecar-io")
        .enable_io()
        .build()?;
    let served = io.block_on(async {
        // A stale socket file from a killed predecessor would make bind fail.
        let _ = std::fs::remove_file(&args.socket);
        let listener = UnixListener::bind(&args.socket)?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            r = tandem_sidecar::serve(listener, handlers.clone()) => r,
            _ = term.recv() => Ok(()),
            _ = int.recv() => Ok(()),
        }
    });
    // Connections still open are dropped with the I/O runtime; then no task holds the
    // handlers' runtime, which must be shut down outside any tokio context.
    io.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_file(&args.socket);
    if let Ok(mut handlers) = Arc::try_unwrap(handlers) {
        handlers.shutdown(Duration::from_secs(1));
    }
    served?;
    Ok(())
}
