//! Benchmark floor: serves one file's bytes at `/static` through the same axum
//! stack (request ids, tracing) as the gateway, without auth or store.
//!
//! `static_floor ADDR FILE`

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: static_floor ADDR FILE");
        std::process::exit(2);
    };
    let body = std::fs::read(&file).expect("read the file to serve");
    let router = Router::new().route(
        "/static",
        get(move || {
            let b = body.clone();
            async move { ([("content-type", "application/json")], b) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, shifter_imagegw::api::with_layers(router))
        .await
        .expect("serve");
}
