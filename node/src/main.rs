//! `mart`: one node of a mart cluster. See `mart --help`.

// Many small allocations from many threads (a task per request, per actor
// message): glibc's malloc spent a seventh of the node's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often freed memory is offered back to the kernel.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// How long freed memory stays with mimalloc before it may go back to the
/// kernel (its default is 1 s). Under load, memory freed is soon used again:
/// handing it back at 1 s and faulting it in again showed as 4% of the
/// machine's CPU in the kernel zeroing pages.
const PURGE_DELAY_MS: std::ffi::c_long = 5_000;
/// `mi_option_purge_delay` in mimalloc 3's option enum (the -sys crate names
/// no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Hands memory freed in bulk back to the kernel, a few seconds after it was
/// freed. mimalloc returns freed pages only once their purge delay has
/// passed *and* some thread next frees or abandons a page; after a sweep
/// stops thousands of idle entity actors a quiet node may not do that for a
/// long time, and kept 1 GB per 100k stopped actors. A normal collection is
/// cheap when nothing is due. `MIMALLOC_PURGE_DELAY` still wins if set.
#[allow(unsafe_code)]
fn start_purger() {
    // SAFETY: plain calls with no pointers; mimalloc's options may be set
    // at any time, from any thread.
    unsafe {
        let version = libmimalloc_sys::mi_version();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() && version / 10_000 == 3 {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
    let purger = std::thread::Builder::new()
        .name("mart-purge".into())
        .spawn(|| {
            // mimalloc collects only for threads it knows, which it learns
            // at their first allocation.
            drop(std::hint::black_box(Box::new(0u64)));
            loop {
                std::thread::sleep(PURGE_EVERY);
                // SAFETY: takes no pointers and may be called from any thread.
                unsafe { libmimalloc_sys::mi_collect(false) };
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
