//! Arguments and entry points of `wafleet shards …`, `wafleet route` and `wafleet token`.

use crate::auth::Authority;
use crate::ids::WorkspaceId;

/// Errors of the operator commands.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Token configuration is missing or wrong.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A token cannot be minted without a secret.
    #[error("WAFLEET_TOKEN_SECRET is not set; workspace tokens are minted from it")]
    NoSecret,
    /// The command is not available yet.
    #[error("this command is being built")]
    NotBuilt,
}

/// Arguments of `wafleet shards`.
#[derive(Debug, clap::Args)]
pub struct ShardsArgs {}

/// Runs `wafleet shards …`.
pub async fn shards(_args: ShardsArgs) -> Result<(), CtlError> {
    Err(CtlError::NotBuilt)
}

/// Arguments of `wafleet route`.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {}

/// Runs `wafleet route <ws>`.
pub async fn route(_args: RouteArgs) -> Result<(), CtlError> {
    Err(CtlError::NotBuilt)
}

/// Arguments of `wafleet token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The workspace the token is for.
    pub workspace: WorkspaceId,
    /// Print `{"workspace","token"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `wafleet token <ws>`: prints a workspace token minted from `WAFLEET_TOKEN_SECRET`.
pub async fn token(args: TokenArgs) -> Result<(), CtlError> {
    let authority = Authority::from_env()?;
    let token = authority.mint(&args.workspace).ok_or(CtlError::NoSecret)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"workspace": args.workspace, "token": token})
        );
    } else {
        println!("{token}");
    }
    Ok(())
}
