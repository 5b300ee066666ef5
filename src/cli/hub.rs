//! `ruprompts push` and `ruprompts pull`: prompts (and backbones) to and from the Hugging Face Hub.

use std::path::PathBuf;

use clap::Args;
#[cfg(feature = "hub")]
use {
    crate::hub::{self, Pushed, RepoId},
    crate::prompt::Prompt,
    anyhow::{anyhow, bail, Result},
    tch::Device,
};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The prompt's folder: a training run's output_dir, or any folder with prompt.json and its weights.
    /// Its eval/report.json, when there is one, goes into the model card.
    pub dir: PathBuf,
    /// The repo to push to, owner/name (created when missing).
    pub repo: String,
    /// Make the repo private when it is created (an existing repo keeps its visibility).
    #[arg(long)]
    pub private: bool,
    /// The branch to commit to (created from main when missing).
    #[arg(long, default_value = "main")]
    pub revision: String,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The repo, owner/name[@revision] (a branch, tag or commit).
    pub repo: String,
    /// The repo is a backbone (config.json, weights, tokenizer), not a prompt.
    #[arg(long)]
    pub model: bool,
}

#[cfg(feature = "hub")]
fn repo_id(text: &str) -> Result<RepoId> {
    RepoId::parse(text).ok_or_else(|| anyhow!("'{text}' is not a Hub repo id such as owner/name"))
}

#[cfg(feature = "hub")]
pub fn push(args: PushArgs) -> Result<()> {
    let mut repo = repo_id(&args.repo)?;
    if repo.revision.is_some() {
        bail!("give the branch with --revision, not as {}", args.repo);
    }
    repo.revision = Some(args.revision);
    match hub::push(&args.dir, &repo, args.private)? {
        Pushed::Committed { commit, url, changed, deleted } => {
            println!("committed {commit} to {repo}: {}", changed.join(", "));
            if !deleted.is_empty() {
                println!("removed {}, which this prompt does not have", deleted.join(", "));
            }
            println!("{url}");
        }
        Pushed::Unchanged { commit } => {
            println!("nothing changed: {repo} already holds this prompt (commit {commit}); nothing committed")
        }
    }
    Ok(())
}

#[cfg(feature = "hub")]
pub fn pull(args: PullArgs) -> Result<()> {
    let repo = repo_id(&args.repo)?;
    let dir = if args.model {
        hub::pull_model(&repo)?
    } else {
        let dir = hub::pull_prompt(&repo)?;
        // Loading proves the files make a prompt.
        Prompt::load(&dir, Device::Cpu)?;
        dir
    };
    println!("{}", dir.display());
    Ok(())
}
