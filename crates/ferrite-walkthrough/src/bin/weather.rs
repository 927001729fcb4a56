//! `ferrite-weather`: serves the current weather over HTTP, cached in
//! redis under `currentweather`. redis is found through Docker's link
//! variables (the ambassador, linked as `redis`), unless `--redis` says.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::http::StatusCode;
use clap::Parser;
use ferrite_walkthrough::resp::{self, Reply};

const KEY: &str = "currentweather";

/// Serves the current weather, cached in redis.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[arg(long, env = "WEATHER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// redis's `host:port` (default: from the `redis` link's variables).
    #[arg(long, env = "WEATHER_REDIS")]
    redis: Option<String>,

    /// Take the reading from this file instead of generating one.
    #[arg(long, env = "WEATHER_READING_FILE")]
    reading_file: Option<PathBuf>,

    /// Seconds the cached reading lives in redis (0: until replaced).
    #[arg(long, env = "WEATHER_CACHE_SECONDS", default_value_t = 0)]
    cache_seconds: u64,
}

#[derive(Debug)]
struct App {
    redis: String,
    reading_file: Option<PathBuf>,
    cache_seconds: u64,
}

impl App {
    fn reading(&self) -> anyhow::Result<String> {
        match &self.reading_file {
            Some(path) => Ok(std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .trim()
                .to_owned()),
            None => Ok(ferrite_walkthrough::generated_reading(
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            )),
        }
    }

    /// The cached reading, or a new one cached now.
    async fn current(&self) -> anyhow::Result<String> {
        let stream = tokio::net::TcpStream::connect(&self.redis)
            .await
            .with_context(|| format!("cannot connect to redis at {}", self.redis))?;
        let mut redis = tokio::io::BufStream::new(stream);
        if let Reply::Bulk(Some(cached)) = resp::command(&mut redis, &["GET", KEY]).await? {
            return Ok(cached);
        }
        let reading = self.reading()?;
        let ttl = self.cache_seconds.to_string();
        let mut set = vec!["SET", KEY, &reading];
        if self.cache_seconds > 0 {
            set.extend(["EX", &ttl]);
        }
        resp::command(&mut redis, &set).await?;
        tracing::info!(%reading, "cached a new reading");
        Ok(reading)
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let redis = match args.redis {
        Some(r) => r,
        None => ferrite_walkthrough::redis_from_link(|k| std::env::var(k).ok())
            .context("no --redis and no redis link (REDIS_PORT) in the environment")?,
    };
    let app = Arc::new(App { redis, reading_file: args.reading_file, cache_seconds: args.cache_seconds });
    let router = axum::Router::new().fallback(move || {
        let app = app.clone();
        async move {
            match app.current().await {
                Ok(reading) => (StatusCode::OK, format!("{reading}\n")),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "no reading");
                    (StatusCode::BAD_GATEWAY, format!("{e:#}\n"))
                }
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %args.listen, "serving the weather");
    axum::serve(listener, router).with_graceful_shutdown(ferrite_daemon::shutdown_signal()).await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    ferrite_daemon::run("ferrite-weather", serve(args))
}
