//! Taking connections: at most `--max-connections` at once (more wait in the kernel's backlog until one closes),
//! each closed when a request's head does not arrive within `--header-timeout` (an idle keep-alive connection
//! too), so sockets that send nothing cannot hold the server. Ctrl-C or SIGTERM stops taking connections and lets
//! those open finish their requests.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How connections are held.
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    /// Open at once.
    pub max: usize,
    /// For a request's head to arrive, from the moment the server waits for it.
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until Ctrl-C or SIGTERM, then waits for the open connections' requests.
pub async fn accept(listener: TcpListener, app: Router, connections: Connections) -> Result<()> {
    let slots = Arc::new(Semaphore::new(connections.max));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(connections.header_timeout);
    let mut stop = pin!(shutdown());
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot?,
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: the listener still stands; try again shortly.
                    eprintln!("serve: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Streamed tokens go out as they come, not after Nagle's delay.
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => drop(s.recv().await),
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = interrupt => {}, () = terminate => {} }
    eprintln!("serve: shutting down, finishing the requests in flight");
}
