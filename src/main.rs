use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = mcpgate::cli::Cli::parse();
    // JSON logs; OpenTelemetry traces when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let telemetry = mcpgate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcpgate: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(mcpgate::cli::run(cli));
    // The gateway has stopped (or the command ended): spans still buffered go out now.
    telemetry.shutdown();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcpgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
