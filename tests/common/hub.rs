//! A Hugging Face Hub stand-in on 127.0.0.1 for the tests (the real Hub is never contacted): repos with branches
//! and commits held in memory, the download routes the clients use (`HEAD`/`GET …/resolve/{rev}/{path}` with
//! `X-Repo-Commit` and `ETag`, `GET /api/models/{id}[/revision/{rev}]`), a token check, and HTTP failures on
//! demand. Routes and headers follow ../shared/docs/hub.md.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use tiny_http::{Header, Method, Request, Response, Server};

/// What the next matching requests get instead of their answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    Status(u16),
}

#[derive(Debug, Default)]
struct Repo {
    /// Branch (or tag) → commit oid.
    refs: HashMap<String, String>,
    /// Commit oid → files.
    commits: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

#[derive(Debug, Default)]
struct State {
    repos: HashMap<String, Repo>,
    /// Bearer token every request must carry, when set.
    token: Option<String>,
    /// (path substring, failure, times left) for the next requests whose path contains it.
    fail: Option<(String, Failure, usize)>,
    /// Every request as "METHOD path".
    log: Vec<String>,
}

pub struct FakeHub {
    pub url: String,
    state: Arc<Mutex<State>>,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap()
}

fn error(status: u16, code: Option<&str>, commit: Option<&str>) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut r = Response::from_string(format!("{{\"error\":\"{}\"}}", code.unwrap_or("error")))
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"));
    if let Some(code) = code {
        r = r.with_header(header("X-Error-Code", code));
    }
    if let Some(commit) = commit {
        r = r.with_header(header("X-Repo-Commit", commit));
    }
    r
}

/// `%2F` and friends back to their characters (revisions like `refs%2Fpr%2F1`).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex =
            b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(x)) => {
                out.push(x);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

impl FakeHub {
    pub fn start() -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let (s, st) = (server.clone(), state.clone());
        let thread = std::thread::spawn(move || {
            for request in s.incoming_requests() {
                handle(&st, request);
            }
        });
        Self { url, state, server, thread: Some(thread) }
    }

    /// Commits `files` (replacing the branch's files) to `repo` (`owner/name`) on `branch`; returns the commit oid.
    pub fn commit(&self, repo: &str, branch: &str, files: &[(String, Vec<u8>)]) -> String {
        let mut state = self.state.lock().unwrap();
        let repo = state.repos.entry(repo.to_string()).or_default();
        let mut hasher = Sha256::new();
        for (path, bytes) in files {
            hasher.update(path.as_bytes());
            hasher.update(bytes);
        }
        hasher.update(repo.commits.len().to_le_bytes());
        let oid: String = hasher.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect();
        repo.commits.insert(oid.clone(), files.iter().cloned().collect());
        repo.refs.insert(branch.to_string(), oid.clone());
        oid
    }

    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().token = Some(token.to_string());
    }

    /// The next `times` requests whose "METHOD path" contains `part` fail as `failure` (clients retry).
    pub fn fail(&self, part: &str, failure: Failure, times: usize) {
        self.state.lock().unwrap().fail = Some((part.to_string(), failure, times));
    }

    pub fn stop_failing(&self) {
        self.state.lock().unwrap().fail = None;
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(state: &Mutex<State>, mut request: Request) {
    // Always drain the body: keep-alive clients otherwise read garbage as the next response.
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let method = request.method().clone();
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let mut st = state.lock().unwrap();
    let line = format!("{method} {path}");
    st.log.push(line.clone());
    let failure = match &mut st.fail {
        Some((part, f, times)) if line.contains(part.as_str()) => {
            let f = *f;
            *times -= 1;
            if *times == 0 {
                st.fail = None;
            }
            Some(f)
        }
        _ => None,
    };
    if let Some(Failure::Status(code)) = failure {
        let _ = request.respond(error(code, None, None));
        return;
    }
    if let Some(token) = &st.token {
        let expected = format!("Bearer {token}");
        if !request.headers().iter().any(|h| h.field.equiv("Authorization") && h.value.as_str() == expected) {
            let _ = request.respond(error(401, None, None));
            return;
        }
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/models/{owner}/{name}[/revision/{rev}]
    if method == Method::Get && parts.len() >= 4 && parts[0] == "api" && parts[1] == "models" {
        let id = format!("{}/{}", parts[2], parts[3]);
        let rev = if parts.len() >= 6 && parts[4] == "revision" { decode(parts[5]) } else { "main".into() };
        let Some(repo) = st.repos.get(&id) else {
            return drop(request.respond(error(404, Some("RepoNotFound"), None)));
        };
        let Some(commit) = resolve_rev(repo, &rev) else {
            return drop(request.respond(error(404, Some("RevisionNotFound"), None)));
        };
        let siblings: Vec<String> =
            repo.commits[&commit].keys().map(|p| format!("{{\"rfilename\":\"{p}\"}}")).collect();
        let json =
            format!("{{\"id\":\"{id}\",\"sha\":\"{commit}\",\"private\":false,\"siblings\":[{}]}}", siblings.join(","));
        let _ = request.respond(Response::from_string(json).with_header(header("Content-Type", "application/json")));
        return;
    }
    // /{owner}/{name}/resolve/{rev}/{path...}
    if (method == Method::Get || method == Method::Head) && parts.len() >= 5 && parts[2] == "resolve" {
        let id = format!("{}/{}", parts[0], parts[1]);
        let (rev, file) = (decode(parts[3]), decode(&parts[4..].join("/")));
        let Some(repo) = st.repos.get(&id) else {
            return drop(request.respond(error(404, Some("RepoNotFound"), None)));
        };
        let Some(commit) = resolve_rev(repo, &rev) else {
            return drop(request.respond(error(404, Some("RevisionNotFound"), None)));
        };
        let Some(bytes) = repo.commits[&commit].get(&file).cloned() else {
            return drop(request.respond(error(404, Some("EntryNotFound"), Some(&commit))));
        };
        let etag = sha256_hex(&bytes);
        let len = bytes.len();
        let response = Response::new(
            200.into(),
            vec![
                header("ETag", &format!("\"{etag}\"")),
                header("X-Repo-Commit", &commit),
                header("Content-Type", "application/octet-stream"),
            ],
            // tiny_http leaves the body out of HEAD responses itself.
            std::io::Cursor::new(bytes),
            Some(len),
            None,
        );
        let _ = request.respond(response);
        return;
    }
    let _ = request.respond(error(404, None, None));
}

fn resolve_rev(repo: &Repo, rev: &str) -> Option<String> {
    repo.refs.get(rev).cloned().or_else(|| repo.commits.contains_key(rev).then(|| rev.to_string()))
}
