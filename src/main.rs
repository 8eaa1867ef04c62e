fn main() -> std::process::ExitCode {
    redis_move::main()
}
