//! Hub repo ids (`owner/name[@revision]`): what the CLI tells apart from local paths, with or without a Hub client.

/// `owner/name`, optionally `@revision` (a branch, tag or commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
    pub revision: Option<String>,
}

impl RepoId {
    /// A Hub id when `text` has that shape (`user/repo`, `user/repo@v1`), `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, revision) = match text.split_once('@') {
            Some((id, rev)) if !rev.is_empty() => (id, Some(rev.to_string())),
            Some(_) => return None,
            None => (text, None),
        };
        let (owner, name) = id.split_once('/')?;
        let part = |s: &str| {
            !s.is_empty()
                && !s.starts_with(['.', '-'])
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (part(owner) && part(name)).then(|| Self { owner: owner.into(), name: name.into(), revision })
    }

    /// A Hub id naming one GGUF file of a repo, `owner/name/FILE.gguf[@revision]` (FILE may be in folders), as
    /// the repo and the file's path in it; `None` for anything else.
    pub fn parse_gguf(text: &str) -> Option<(Self, String)> {
        let (id, revision) = match text.split_once('@') {
            Some((id, rev)) => (id, Some(rev)),
            None => (text, None),
        };
        let mut parts = id.splitn(3, '/');
        let (owner, name, file) = (parts.next()?, parts.next()?, parts.next()?);
        let clean = file.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
        if !clean || !file.to_ascii_lowercase().ends_with(".gguf") {
            return None;
        }
        let repo = Self::parse(&match revision {
            Some(rev) => format!("{owner}/{name}@{rev}"),
            None => format!("{owner}/{name}"),
        })?;
        Some((repo, file.to_string()))
    }

    /// The revision, `main` when none was given.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)?;
        match &self.revision {
            Some(rev) => write!(f, "@{rev}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_parse_and_paths_do_not() {
        let id = RepoId::parse("konodyuk/prompt_rugpt3large_joke@v1.0").unwrap();
        assert_eq!(
            (id.owner.as_str(), id.name.as_str(), id.revision.as_deref()),
            ("konodyuk", "prompt_rugpt3large_joke", Some("v1.0"))
        );
        assert_eq!(id.to_string(), "konodyuk/prompt_rugpt3large_joke@v1.0");
        assert_eq!(RepoId::parse("ai-forever/rugpt3small_based_on_gpt2").unwrap().revision, None);
        for path in ["runs/terra/prompt", "./runs/x", "/abs/path", "runs", "a/b@", "../x/y", "a b/c"] {
            assert_eq!(RepoId::parse(path), None, "{path}");
        }
    }

    #[test]
    fn gguf_file_ids_name_the_repo_and_the_file() {
        let (repo, file) = RepoId::parse_gguf("bartowski/SmolLM2-135M-Instruct-GGUF/q/model-Q4_K.gguf@v2").unwrap();
        assert_eq!(repo.to_string(), "bartowski/SmolLM2-135M-Instruct-GGUF@v2");
        assert_eq!(file, "q/model-Q4_K.gguf");
        for path in ["a/b", "a/b/c.bin", "a/b/../c.gguf", "/abs/x.gguf", "./a/b.gguf", "a//b.gguf", "a/b@/c.gguf"] {
            assert_eq!(RepoId::parse_gguf(path), None, "{path}");
        }
    }
}
