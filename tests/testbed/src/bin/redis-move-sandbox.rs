//! The local sandbox (see `redis_move_testbed::sandbox`): `up`, `down`, `status`.
//!
//! ```text
//! redis-move-sandbox up [--jobs N] [--job-ms MS] [--plant src-mount|module-error|module-error-after-cutover] [--with-job-keys]
//! redis-move-sandbox managed      (stand-ins for Render and Upstash, until Ctrl-C)
//! redis-move-sandbox cluster      (a 3+3 Redis Cluster beside it, for runbooks/queue-to-cluster.yaml)
//! redis-move-sandbox workers-to-cluster   (the workers on the cluster, under the {bull} prefix)
//! redis-move-sandbox status
//! redis-move-sandbox app          (stop the application; is every job it saw acknowledged on the primary?)
//! redis-move-sandbox down
//! ```

use redis_move_testbed::managed;
use redis_move_testbed::sandbox::{self, Options};

const USAGE: &str = "usage: redis-move-sandbox up [--jobs N] [--job-ms MS] [--rate JOBS_PER_S] [--plant src-mount|module-error|module-error-after-cutover] [--with-job-keys] | managed | cluster | workers-to-cluster | status | app | down";

fn fail(message: &str) -> ! {
    eprintln!("redis-move-sandbox: {message}\n{USAGE}");
    std::process::exit(2);
}

/// Runs `work` with the local Docker Engine (or fails when none answers).
fn with_docker<F, Fut>(work: F)
where
    F: FnOnce(bollard::Docker) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let docker = match bollard::Docker::connect_with_defaults() {
            Ok(d) if d.ping().await.is_ok() => d,
            _ => fail("no Docker Engine answers (is dockerd running?)"),
        };
        work(docker).await;
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("up") => {
            let mut options = Options::default();
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                if flag == "--with-job-keys" {
                    options.job_keys = true;
                    continue;
                }
                let value = rest
                    .next()
                    .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
                match flag.as_str() {
                    "--jobs" => {
                        options.jobs = value
                            .parse()
                            .unwrap_or_else(|_| fail("--jobs takes a number"))
                    }
                    "--rate" => {
                        options.produce = value
                            .parse()
                            .unwrap_or_else(|_| fail("--rate takes a number"))
                    }
                    "--job-ms" => {
                        options.job_ms = value
                            .parse()
                            .unwrap_or_else(|_| fail("--job-ms takes a number"))
                    }
                    "--plant" => match value.as_str() {
                        "src-mount" => options.src_mount = true,
                        "module-error" => options.module_error = true,
                        "module-error-after-cutover" => options.module_error_after_cutover = true,
                        other => fail(&format!("unknown fault `{other}`")),
                    },
                    other => fail(&format!("unknown option `{other}`")),
                }
            }
            let jobs = options.jobs;
            with_docker(|docker| async move { sandbox::up(&docker, &options).await });
            println!(
                "sandbox up: VPS-01 (this engine): {} (127.0.0.1:{}) with {} jobs, 14 workers on network {}\n\
                 VPS (second engine, over ssh://root@127.0.0.1:{}): empty, the runbook provisions it",
                sandbox::SOURCE,
                sandbox::SOURCE_PORT,
                jobs,
                sandbox::NETWORK,
                sandbox::SSH_PORT,
            );
            print!("{}", sandbox::status());
        }
        Some("managed") => {
            let render = managed::render();
            let upstash = managed::upstash();
            println!(
                "Render stand-in: Redis 127.0.0.1:{}, API http://127.0.0.1:{}\n  export RENDER_REDIS_URL=redis://:{}@127.0.0.1:{} API_TOKEN=sandbox",
                render.redis.port,
                render.api.port,
                managed::PASSWORD,
                render.redis.port
            );
            println!(
                "Upstash stand-in: TLS Redis 127.0.0.1:{}, HTTPS 127.0.0.1:{}, CA {}\n  export UPSTASH_REDIS_PASSWORD={} UPSTASH_REDIS_TOKEN=sandbox ADMIN_TOKEN=sandbox",
                upstash.redis.port,
                upstash.https.port,
                upstash.ca.display(),
                managed::PASSWORD
            );
            println!("Ctrl-C stops them.");
            loop {
                std::thread::park();
            }
        }
        Some("cluster") => {
            with_docker(|docker| async move { sandbox::cluster_up(&docker).await });
            println!(
                "cluster up: 3 primaries and 3 replicas at {} (network {})\n  export SOURCE_REDIS_URL=redis://127.0.0.1:{} CLUSTER_REDIS_URL={}\n  redis-move run runbooks/queue-to-cluster.yaml",
                sandbox::CLUSTER_NODES.join(" "),
                sandbox::NETWORK,
                sandbox::SOURCE_PORT,
                sandbox::cluster_url(),
            );
        }
        Some("workers-to-cluster") => {
            sandbox::workers_to_cluster(20);
            println!(
                "14 workers on {} under the {{bull}} prefix",
                sandbox::cluster_url()
            );
        }
        Some("status") => print!("{}", sandbox::status()),
        Some("app") => {
            let Some((which, primary)) = sandbox::primary_url() else {
                fail("neither sandbox Redis is a reachable primary");
            };
            let (acked, rejected) = sandbox::stop_app();
            let missing = sandbox::missing_jobs(&primary, &acked);
            println!(
                "app: {} jobs acknowledged, {rejected} writes refused, {} lost (on the primary: {which})",
                acked.len(),
                missing.len(),
            );
            if !missing.is_empty() {
                println!("lost: {}", missing.join(" "));
                std::process::exit(1);
            }
        }
        Some("down") => {
            sandbox::down();
            println!("sandbox down");
        }
        _ => fail("which command?"),
    }
}
