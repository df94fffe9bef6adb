//! `mart`: one node of a mart cluster. See `mart --help`.

// Many small allocations from many threads (a task per request, per actor
// message): glibc's malloc spent a seventh of the node's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often freed memory is offered back to the kernel.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Hands memory freed in bulk back to the kernel. mimalloc returns freed
/// pages only once its purge delay (1 s) has passed *and* some thread next
/// frees or abandons a page; after a sweep stops thousands of idle entity
/// actors a quiet node may not do that for a long time, and kept 1 GB per
/// 100k stopped actors. A normal collection is cheap when nothing is due.
fn start_purger() {
    let purger = std::thread::Builder::new()
        .name("mart-purge".into())
        .spawn(|| {
            // mimalloc collects only for threads it knows, which it learns
            // at their first allocation.
            drop(std::hint::black_box(Box::new(0u64)));
            loop {
                std::thread::sleep(PURGE_EVERY);
                // SAFETY: takes no pointers and is meant to be called from any thread.
                #[allow(unsafe_code)]
                unsafe {
                    libmimalloc_sys::mi_collect(false)
                };
            }
        });
    if let Err(e) = purger {
        eprintln!("mart: no memory purger ({e}); freed memory is returned more slowly");
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = mart_node::config::parse();
    start_purger();
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
