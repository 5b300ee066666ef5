use clap::Parser;

fn main() {
    if let Err(err) = ruprompts::cli::run(ruprompts::cli::Cli::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
