//! The local sandbox (see `redis_move_testbed::sandbox`): `up`, `down`, `status`.
//!
//! ```text
//! redis-move-sandbox up [--jobs N] [--job-ms MS] [--plant src-mount|module-error|module-error-after-cutover]
//! redis-move-sandbox status
//! redis-move-sandbox down
//! ```

use redis_move_testbed::sandbox::{self, Options};

const USAGE: &str = "usage: redis-move-sandbox up [--jobs N] [--job-ms MS] [--plant src-mount|module-error|module-error-after-cutover] | status | down";

fn fail(message: &str) -> ! {
    eprintln!("redis-move-sandbox: {message}\n{USAGE}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("up") => {
            let mut options = Options::default();
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                let value = rest
                    .next()
                    .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
                match flag.as_str() {
                    "--jobs" => {
                        options.jobs = value
                            .parse()
                            .unwrap_or_else(|_| fail("--jobs takes a number"))
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
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(async {
                let docker = match bollard::Docker::connect_with_defaults() {
                    Ok(d) if d.ping().await.is_ok() => d,
                    _ => fail("no Docker Engine answers (is dockerd running?)"),
                };
                sandbox::up(&docker, &options).await;
            });
            println!(
                "sandbox up: {} (127.0.0.1:{}) with {} jobs, 14 workers on network {}",
                sandbox::SOURCE,
                sandbox::SOURCE_PORT,
                options.jobs,
                sandbox::NETWORK
            );
            print!("{}", sandbox::status());
        }
        Some("status") => print!("{}", sandbox::status()),
        Some("down") => {
            sandbox::down();
            println!("sandbox down");
        }
        _ => fail("which command?"),
    }
}
