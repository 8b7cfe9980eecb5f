//! Private `redis-server` processes on spare loopback ports, for the tests that need a
//! server of their own (outages, round trips, clusters).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{random_id, Raw, Reply};

// ----- environment -----

/// Fails the test if `name` (`redis-server`, `redis-cli`) is not installed: a test that
/// cannot run must not pass.
pub fn need_binary(name: &str) {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} is not on PATH: this test starts private Redis servers (install redis-server, \
         or unset REDIS_URL to list the Redis tests as ignored)"
    );
}

// ----- private redis-server processes -----

pub fn spare_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a spare loopback port")
}

/// A `redis-server` child on a loopback port, killed (and its directory removed) on drop.
pub struct Server {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

/// A spare port for a cluster node, whose cluster bus listens on `port + 10000` as well.
/// Both come from below Linux's ephemeral range (32768-60999 by default), so that neither
/// collides with the local port of an outgoing connection, and the bus port stays a valid
/// port (an ephemeral port above 55535 has none, and that node would never come up).
pub fn spare_cluster_port() -> u16 {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    // Bounded: 15000-22767 holds thousands of candidates, and a loaded machine uses few.
    for _ in 0..1_000 {
        let port = 15_000 + rand::random::<u16>() % 7_768;
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no spare port pair (p, p + 10000) below 32768 for a cluster node")
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Server::start_on(spare_port(), extra)
    }

    /// A server on `port`.
    pub fn start_on(port: u16, extra: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!("tsg-redis-{}", random_id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Server {
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--dir"])
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut raw) = Raw::connect(&self.url()) {
                if raw
                    .cmd(&["PING"])
                    .is_ok_and(|r| r == Reply::Status("PONG".into()))
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not come up",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of private servers on loopback: `primaries` primaries with `replicas`
/// replicas each, created with `redis-cli --cluster create` and ready (`cluster_state:ok` on
/// every node) when `start` returns. Its servers are killed when it is dropped.
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub fn start(primaries: usize, replicas: usize, node_timeout_ms: u32) -> Cluster {
        need_binary("redis-server");
        need_binary("redis-cli");
        let timeout = node_timeout_ms.to_string();
        let nodes: Vec<Server> = (0..primaries * (1 + replicas))
            .map(|_| {
                Server::start_on(
                    spare_cluster_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &timeout,
                        // A replica takes over however long it has been apart from its primary
                        // (a test's replica may have synced only just before the kill).
                        "--cluster-replica-validity-factor",
                        "0",
                        // The other primaries' slots stay served while one primary's are down.
                        "--cluster-require-full-coverage",
                        "no",
                        "--appendonly",
                        "no",
                    ],
                )
            })
            .collect();
        let cluster = Cluster { nodes };
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.addrs())
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create");
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &cluster.nodes {
            loop {
                let ok = Raw::connect(&n.url())
                    .and_then(|mut raw| raw.cmd(&["CLUSTER", "INFO"]))
                    .is_ok_and(|info| info.text().contains("cluster_state:ok"));
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not become ready"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Replicas report ok before their first sync; wait until every primary has them, and
        // every replica is in sync.
        for n in &cluster.nodes {
            loop {
                let info = Raw::connect(&n.url())
                    .unwrap()
                    .cmd(&["INFO", "replication"])
                    .unwrap()
                    .text();
                // A replica counts once its first sync is done (`master_link_status:up`): one
                // that is still syncing would take over with nothing.
                let done = if info.contains("role:master") {
                    info.contains(&format!("connected_slaves:{replicas}"))
                } else {
                    info.contains("master_link_status:up")
                };
                if done {
                    break;
                }
                assert!(Instant::now() < deadline, "replicas did not attach");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The `redis-cluster://` URL the store takes.
    pub fn url(&self) -> String {
        format!("redis-cluster://{}", self.addrs().join(","))
    }

    /// The indexes in `nodes` of the servers that are primaries now (by `ROLE`).
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.node_is_primary(i))
            .collect()
    }

    pub fn node_is_primary(&self, i: usize) -> bool {
        Raw::connect(&self.nodes[i].url())
            .and_then(|mut raw| raw.cmd(&["ROLE"]))
            .is_ok_and(|r| match r {
                Reply::Array(items) => items
                    .first()
                    .is_some_and(|f| matches!(f, Reply::Bulk(Some(b)) if b == b"master")),
                _ => false,
            })
    }
}
