//! `mart`: one node of a mart cluster. See `mart --help`.

// Many small allocations from many threads (a task per request, per actor
// message): glibc's malloc spent a seventh of the node's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = mart_node::config::parse();
    let telemetry = match mart_node::telemetry::init(&cli.node.log_format, &cli.node.node_name) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("mart: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = mart_node::run(cli).await;
    telemetry.shutdown().await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line a person can act on.
            eprintln!("mart: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
