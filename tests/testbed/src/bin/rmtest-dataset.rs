//! Loads a dataset into a Redis server, for benchmarks and the sandbox.
//!
//! `rmtest-dataset bullmq URL QUEUES JOBS`: BullMQ-shaped queues (job hashes, wait lists,
//! delayed/completed/failed sorted sets, events streams, ~7% with a TTL).
//! `rmtest-dataset every-type URL PREFIX`: one key of every type and encoding.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: rmtest-dataset bullmq URL QUEUES JOBS | every-type URL PREFIX";
    match args.get(1).map(String::as_str) {
        Some("bullmq") if args.len() == 5 => {
            let (Ok(queues), Ok(jobs)) = (args[3].parse(), args[4].parse()) else {
                eprintln!("{usage}");
                std::process::exit(2);
            };
            let mut con = redis_move_testbed::dataset::connect(&args[2]);
            redis_move_testbed::dataset::load_bullmq(&mut con, queues, jobs);
        }
        Some("every-type") if args.len() == 4 => {
            let mut con = redis_move_testbed::dataset::connect(&args[2]);
            redis_move_testbed::dataset::load_every_type(&mut con, &args[3]);
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
