//! `wafleet dev`: the one-machine fleet supervisor (DESIGN §10).

pub mod cli {
    //! Command-line arguments and entry point of `wafleet dev`.

    /// Arguments of `wafleet dev`.
    #[derive(Debug, clap::Args)]
    pub struct Args {}

    /// Runs `wafleet dev`.
    pub async fn run(_args: Args) -> Result<(), std::io::Error> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this command is being built",
        ))
    }
}
