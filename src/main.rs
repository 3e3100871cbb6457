use clap::Parser;

use adiff::cli::{Cli, Command};

fn main() {
    // Output piped into a reader that stops early (`adiff ... | head`) ends the process quietly,
    // as for other Unix tools, instead of a "failed printing to stdout" panic.
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // Training, dataset building and batched inference reuse many large same-sized buffers:
    // keep freed memory. One explanation or tagging run allocates the model once: glibc's
    // defaults hand freed load-time buffers back (explain, full model, int8: peak RSS 573 ->
    // 544 MB, and no slower).
    if matches!(cli.command, Command::Explain(_) | Command::Tag(_)) {
        adiff::alloc::one_arena();
    } else {
        adiff::alloc::keep_freed_memory();
    }
    adiff::alloc::park_idle_threads();
    if matches!(cli.command, Command::Serve(_)) {
        adiff::alloc::inline_elementwise_ops();
    }
    let result = match cli.command {
        Command::Embed(args) => adiff::cli::embed::run(args),
        Command::Tag(args) => adiff::cli::tag::run(args),
        Command::Explain(args) => adiff::cli::explain::run(args),
        Command::Infer(args) => adiff::cli::infer::run(args),
        Command::Convert(args) => adiff::cli::convert::run(args),
        Command::Download(args) => adiff::cli::download::run(args),
        Command::Eval(args) => adiff::cli::eval::run(args),
        Command::BuildDataset(args) => adiff::cli::build_dataset::run(args),
        Command::TrainStage1(args) => adiff::cli::train_stage1::run(args),
        Command::TrainStage2(args) => adiff::cli::train_stage2::run(args),
        Command::TrainStage3(args) => adiff::cli::train_stage3::run(args),
        Command::Train(args) => adiff::cli::train::run(args),
        Command::Serve(args) => adiff::cli::serve::run(args),
    };
    if let Err(e) = result {
        // A command that finished with work left undone: its summary and its own exit status.
        if let Some(incomplete) = e.downcast_ref::<adiff::cli::Incomplete>() {
            eprintln!("{incomplete}");
            std::process::exit(incomplete.code);
        }
        // One line, every cause chained, non-zero exit.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
