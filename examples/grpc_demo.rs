//! The gRPC demo: a tonic server whose `Auth` service is protected by the same
//! `SessionGuardLayer` as the HTTP demo, with the same users and validation policy.
//!
//! ```text
//! cargo run --example grpc_demo                 # server on 127.0.0.1:50051
//! cargo run --example grpc_demo -- client       # a client that walks through a session
//! cargo run --example grpc_demo -- client --user bob --local-address 127.0.0.2
//! ```
//!
//! Server flags are the HTTP demo's: `--addr`, `--idle-timeout`, `--absolute-timeout`,
//! `--pin`, `--trusted-proxy`. Clients carry the token in the `x-session-token` metadata; the
//! server sends a new one back in the same response metadata at login.

mod common;
mod grpc;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use tonic::metadata::MetadataValue;
use tonic::transport::{Endpoint, Server};
use tonic::{Code, Request};
use tower_session_guard::store::SessionStore;

use common::{parse_args, print_banner, FLAGS};
use grpc::auth::auth_client::AuthClient;
use grpc::auth::auth_server::AuthServer;
use grpc::auth::{Empty, LoginRequest};
use grpc::{AuthService, TOKEN_KEY};

#[tokio::main]
async fn main() -> ExitCode {
    let default_addr = SocketAddr::from(([127, 0, 0, 1], 50051));
    let args = match parse_args(std::env::args().skip(1), default_addr) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!(
                "{msg}\nusage: grpc_demo {FLAGS} [client [--user NAME] [--local-address IP]]"
            );
            return ExitCode::from(2);
        }
    };
    let result = match args.rest.first().map(String::as_str) {
        Some("client") => client(args.addr, &args.rest[1..]).await,
        None => server(&args).await,
        Some(other) => Err(format!(
            "unknown argument {other:?}\nusage: grpc_demo {FLAGS} [client]"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn server(args: &common::Args) -> Result<(), String> {
    common::init_logging();
    match &args.redis {
        Some(url) => match common::connect_redis(url).await {
            Ok(store) => serve(store, args).await,
            Err(e) => Err(format!("cannot use Redis at {url}: {e}")),
        },
        None => serve(common::memory_store(args), args).await,
    }
}

async fn serve<St: SessionStore>(store: St, args: &common::Args) -> Result<(), String> {
    let layer = common::layer(store, args)?;
    print_banner(
        &format!("grpc://{} (service demo.auth.v1.Auth)", args.addr),
        args,
    );
    println!(
        "try: cargo run --example grpc_demo -- client --addr {}",
        args.addr
    );
    // The standard health service (grpc.health.v1), as gRPC load balancers and operators
    // expect. It sits behind the session layer too, and needs no session.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AuthServer<AuthService>>()
        .await;
    Server::builder()
        .layer(layer)
        .add_service(health)
        .add_service(AuthServer::new(AuthService))
        .serve_with_shutdown(args.addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("server error: {e}"))
}

/// Attaches the session token, as a client without a cookie jar does.
fn with_token<T>(message: T, token: Option<&MetadataValue<tonic::metadata::Ascii>>) -> Request<T> {
    let mut req = Request::new(message);
    if let Some(t) = token {
        req.metadata_mut().insert(TOKEN_KEY, t.clone());
    }
    req
}

/// Walks through a session and prints each step. Tokens are never printed, only whether
/// they changed.
async fn client(addr: SocketAddr, rest: &[String]) -> Result<(), String> {
    let mut user = "alice".to_owned();
    let mut local: Option<IpAddr> = None;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--user" => user = value.clone(),
            "--local-address" => {
                local = Some(value.parse().map_err(|_| format!("bad IP {value:?}"))?)
            }
            other => return Err(format!("unknown client flag {other:?}")),
        }
    }
    let password = format!("{user}-pass");
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .local_address(local);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut client = AuthClient::new(channel);
    let from = local
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "default".into());
    println!("client for {user} from {from} address, server {addr}");

    let res = client
        .counter(with_token(Empty {}, None))
        .await
        .map_err(|s| s.to_string())?;
    let guest = res.metadata().get(TOKEN_KEY).cloned();
    println!(
        "1. Counter as a guest: count {}; a guest session token came back in metadata: {}",
        res.get_ref().count,
        guest.is_some()
    );

    let res = client
        .login(with_token(
            LoginRequest {
                username: user.clone(),
                password,
            },
            guest.as_ref(),
        ))
        .await;
    let res = match res {
        Ok(r) => r,
        Err(s) => return Err(format!("2. Login failed: {:?} {}", s.code(), s.message())),
    };
    let token = res.metadata().get(TOKEN_KEY).cloned();
    println!(
        "2. Login: {} {:?} {:?}; new token in metadata: {}, differs from the guest token: {}",
        res.get_ref().user,
        res.get_ref().roles,
        res.get_ref().groups,
        token.is_some(),
        token != guest
    );

    match client.who_am_i(with_token(Empty {}, token.as_ref())).await {
        Ok(r) => println!("3. WhoAmI with the new token: {}", r.get_ref().user),
        Err(s) => println!(
            "3. WhoAmI with the new token: {:?} {}",
            s.code(),
            s.message()
        ),
    }
    match client.who_am_i(with_token(Empty {}, guest.as_ref())).await {
        Ok(r) => println!(
            "4. WhoAmI with the pre-login token: {} (fixation!)",
            r.get_ref().user
        ),
        Err(s) => println!(
            "4. WhoAmI with the pre-login token: {:?} (the old token is dead)",
            s.code()
        ),
    }
    for step in 5..=6 {
        match client.counter(with_token(Empty {}, token.as_ref())).await {
            Ok(r) => println!("{step}. Counter: {}", r.get_ref().count),
            Err(s) => println!("{step}. Counter: {:?} {}", s.code(), s.message()),
        }
    }
    match client.logout(with_token(Empty {}, token.as_ref())).await {
        Ok(_) => println!("7. Logout: ok"),
        Err(s) => println!("7. Logout: {:?} {}", s.code(), s.message()),
    }
    match client.who_am_i(with_token(Empty {}, token.as_ref())).await {
        Ok(r) => println!(
            "8. WhoAmI after logout: {} (should not happen)",
            r.get_ref().user
        ),
        Err(s) if s.code() == Code::Unauthenticated => {
            println!("8. WhoAmI after logout: UNAUTHENTICATED ({})", s.message())
        }
        Err(s) => println!("8. WhoAmI after logout: {:?} {}", s.code(), s.message()),
    }
    Ok(())
}
