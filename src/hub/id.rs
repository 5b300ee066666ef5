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
}
