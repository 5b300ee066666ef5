//! A Hugging Face Hub stand-in on 127.0.0.1 for the tests (the real Hub is never contacted): repos with branches
//! and commits held in memory, the routes the clients use to read (`HEAD`/`GET …/resolve/{rev}/{path}`, repo
//! info, tree) and to write (create repo, branch, preupload, LFS batch + upload + verify, NDJSON commit), a token
//! check, and failures on demand: an HTTP status, or (through [`Cutter`]) a connection dropped mid-body.
//! Routes, headers and bodies follow the Hub HTTP API as huggingface_hub and hf-hub use it; what is received is checked (LFS sha256, parent
//! commit, that every `lfsFile` was uploaded).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tiny_http::{Header, Method, Request, Response, Server};

/// What the next matching requests get instead of their answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    Status(u16),
}

/// The patterns of the `.gitattributes` the Hub puts in a new repo: files stored in LFS.
const LFS_SUFFIXES: [&str; 10] =
    [".bin", ".safetensors", ".pt", ".pth", ".h5", ".onnx", ".msgpack", ".pkl", ".npy", ".zip"];

#[derive(Debug, Default)]
struct Repo {
    private: bool,
    /// Branch (or tag) → commit oid.
    refs: HashMap<String, String>,
    /// Commit oid → files.
    commits: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Repo {
    fn resolve(&self, rev: &str) -> Option<String> {
        self.refs.get(rev).cloned().or_else(|| self.commits.contains_key(rev).then(|| rev.to_string()))
    }

    /// Records `files` as a new commit on `branch`; returns its oid.
    fn commit(&mut self, branch: &str, files: BTreeMap<String, Vec<u8>>) -> String {
        let mut hasher = Sha256::new();
        for (path, bytes) in &files {
            hasher.update(path.as_bytes());
            hasher.update(bytes);
        }
        hasher.update(self.commits.len().to_le_bytes());
        let oid: String = hasher.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect();
        self.commits.insert(oid.clone(), files);
        self.refs.insert(branch.to_string(), oid.clone());
        oid
    }
}

#[derive(Debug, Default)]
struct State {
    repos: HashMap<String, Repo>,
    /// LFS objects by sha256.
    lfs: HashMap<String, Vec<u8>>,
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

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Git's blob id: what the Hub gives as a regular file's oid and ETag.
fn git_sha1(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()));
    h.update(bytes);
    hex(&h.finalize())
}

/// Whether the Hub keeps `path` in LFS: a default pattern, 10 MiB or more, or binary.
fn is_lfs(path: &str, bytes: &[u8]) -> bool {
    LFS_SUFFIXES.iter().any(|s| path.ends_with(s))
        || bytes.len() >= 10 << 20
        || bytes[..bytes.len().min(512)].contains(&0)
}

/// The git-lfs pointer file standing for an LFS object in the repo.
fn lfs_pointer(bytes: &[u8]) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n", sha256_hex(bytes), bytes.len())
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap()
}

type Answer = Response<std::io::Cursor<Vec<u8>>>;

fn json_answer(status: u16, value: &Value) -> Answer {
    Response::from_string(value.to_string())
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
}

fn error(status: u16, code: Option<&str>, commit: Option<&str>) -> Answer {
    let mut r = json_answer(status, &json!({ "error": code.unwrap_or("error") }));
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
        let (s, st, u) = (server.clone(), state.clone(), url.clone());
        let thread = std::thread::spawn(move || {
            for request in s.incoming_requests() {
                handle(&st, &u, request);
            }
        });
        Self { url, state, server, thread: Some(thread) }
    }

    /// Commits `files` (replacing the branch's files) to `repo` (`owner/name`) on `branch`; returns the commit oid.
    pub fn commit(&self, repo: &str, branch: &str, files: &[(String, Vec<u8>)]) -> String {
        let mut state = self.state.lock().unwrap();
        state.repos.entry(repo.to_string()).or_default().commit(branch, files.iter().cloned().collect())
    }

    /// The files of `repo` at `rev` (a branch or commit), if both exist.
    pub fn files(&self, repo: &str, rev: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let state = self.state.lock().unwrap();
        let repo = state.repos.get(repo)?;
        Some(repo.commits[&repo.resolve(rev)?].clone())
    }

    /// The commit `branch` of `repo` is at.
    pub fn head(&self, repo: &str, branch: &str) -> Option<String> {
        self.state.lock().unwrap().repos.get(repo)?.refs.get(branch).cloned()
    }

    pub fn is_private(&self, repo: &str) -> bool {
        self.state.lock().unwrap().repos[repo].private
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

fn handle(state: &Mutex<State>, url: &str, mut request: Request) {
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
    // LFS uploads go to presigned storage URLs: no token there, as on the real Hub.
    let presigned = path.starts_with("/lfs-upload/");
    if let (Some(token), false) = (&st.token, presigned) {
        let expected = format!("Bearer {token}");
        if !request.headers().iter().any(|h| h.field.equiv("Authorization") && h.value.as_str() == expected) {
            let _ = request.respond(error(401, None, None));
            return;
        }
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let answer = route(&mut st, url, &method, &parts, &body);
    drop(st);
    let _ = request.respond(answer);
}

fn route(st: &mut State, url: &str, method: &Method, parts: &[&str], body: &[u8]) -> Answer {
    let body_json = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    match (method, parts) {
        (Method::Post, ["api", "repos", "create"]) => create_repo(st, url, &body_json()),
        (Method::Put, ["lfs-upload", oid]) => {
            if sha256_hex(body) != *oid {
                return json_answer(400, &json!({"error": "the uploaded bytes do not match the oid"}));
            }
            st.lfs.insert(oid.to_string(), body.to_vec());
            json_answer(200, &json!({}))
        }
        (Method::Post, ["lfs-verify"]) => {
            let oid = body_json()["oid"].as_str().unwrap_or_default().to_string();
            if st.lfs.contains_key(&oid) {
                json_answer(200, &json!({}))
            } else {
                error(404, None, None)
            }
        }
        (Method::Post, [_, git, "info", "lfs", "objects", "batch"]) if git.ends_with(".git") => {
            let objects: Vec<Value> = body_json()["objects"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|o| {
                    let oid = o["oid"].as_str().unwrap_or_default();
                    if st.lfs.contains_key(oid) {
                        json!({"oid": oid, "size": o["size"]})
                    } else {
                        json!({"oid": oid, "size": o["size"], "authenticated": true, "actions": {
                            "upload": {"href": format!("{url}/lfs-upload/{oid}"), "header": {}},
                            "verify": {"href": format!("{url}/lfs-verify"), "header": {}}}})
                    }
                })
                .collect();
            json_answer(200, &json!({"transfer": "basic", "objects": objects}))
        }
        (_, ["api", "models", owner, name, rest @ ..]) => {
            let id = format!("{owner}/{name}");
            let Some(repo) = st.repos.get_mut(&id) else {
                return error(404, Some("RepoNotFound"), None);
            };
            repo_api(repo, &st.lfs, url, &id, method, rest, body)
        }
        (Method::Get | Method::Head, [owner, name, "resolve", rev, file @ ..]) => {
            let id = format!("{owner}/{name}");
            let Some(repo) = st.repos.get(&id) else {
                return error(404, Some("RepoNotFound"), None);
            };
            let Some(commit) = repo.resolve(&decode(rev)) else {
                return error(404, Some("RevisionNotFound"), None);
            };
            let Some(bytes) = repo.commits[&commit].get(&decode(&file.join("/"))).cloned() else {
                return error(404, Some("EntryNotFound"), Some(&commit));
            };
            let file = file.join("/");
            let mut headers =
                vec![header("X-Repo-Commit", &commit), header("Content-Type", "application/octet-stream")];
            if is_lfs(&file, &bytes) {
                let sha = sha256_hex(&bytes);
                headers.push(header("ETag", &format!("\"{sha}\"")));
                headers.push(header("X-Linked-Etag", &format!("\"{sha}\"")));
                headers.push(header("X-Linked-Size", &bytes.len().to_string()));
            } else {
                headers.push(header("ETag", &format!("\"{}\"", git_sha1(&bytes))));
            }
            let len = bytes.len();
            // tiny_http leaves the body out of HEAD responses itself.
            Response::new(200.into(), headers, std::io::Cursor::new(bytes), Some(len), None)
        }
        _ => error(404, None, None),
    }
}

/// `POST /api/repos/create`: a new repo holds `.gitattributes`; an existing one is a 409 whose body has the url.
fn create_repo(st: &mut State, url: &str, body: &Value) -> Answer {
    let name = body["name"].as_str().unwrap_or_default();
    let owner = body["organization"].as_str().unwrap_or("alice");
    let id = format!("{owner}/{name}");
    let repo_url = format!("{url}/{id}");
    if st.repos.contains_key(&id) {
        return json_answer(409, &json!({"error": "You already created this model repo", "url": repo_url}));
    }
    let private = body["private"].as_bool().unwrap_or(false) || body["visibility"] == "private";
    let mut repo = Repo { private, ..Repo::default() };
    let attributes: String =
        LFS_SUFFIXES.iter().map(|s| format!("*{s} filter=lfs diff=lfs merge=lfs -text\n")).collect();
    repo.commit("main", BTreeMap::from([(".gitattributes".to_string(), attributes.into_bytes())]));
    st.repos.insert(id.clone(), repo);
    json_answer(200, &json!({"url": repo_url, "name": id, "id": id}))
}

/// The `/api/models/{owner}/{name}/…` routes of an existing repo.
fn repo_api(
    repo: &mut Repo,
    lfs: &HashMap<String, Vec<u8>>,
    url: &str,
    id: &str,
    method: &Method,
    rest: &[&str],
    body: &[u8],
) -> Answer {
    let rev_of = |rev: &str| repo.resolve(&decode(rev));
    match (method, rest) {
        (Method::Get, []) | (Method::Get, ["revision", _]) => {
            let Some(commit) = rev_of(rest.get(1).copied().unwrap_or("main")) else {
                return error(404, Some("RevisionNotFound"), None);
            };
            let siblings: Vec<Value> = repo.commits[&commit].keys().map(|p| json!({"rfilename": p})).collect();
            json_answer(200, &json!({"id": id, "sha": commit, "private": repo.private, "siblings": siblings}))
        }
        (Method::Get, ["tree", rev, ..]) => {
            let Some(commit) = rev_of(rev) else {
                return error(404, Some("RevisionNotFound"), None);
            };
            let entries: Vec<Value> = repo.commits[&commit]
                .iter()
                .map(|(path, bytes)| {
                    if is_lfs(path, bytes) {
                        let pointer = lfs_pointer(bytes);
                        json!({"type": "file", "path": path, "size": bytes.len(), "oid": git_sha1(pointer.as_bytes()),
                               "lfs": {"oid": sha256_hex(bytes), "size": bytes.len(), "pointerSize": pointer.len()}})
                    } else {
                        json!({"type": "file", "path": path, "size": bytes.len(), "oid": git_sha1(bytes)})
                    }
                })
                .collect();
            json_answer(200, &Value::Array(entries))
        }
        (Method::Post, ["branch", branch]) => {
            let branch = decode(branch);
            if repo.refs.contains_key(&branch) {
                return json_answer(409, &json!({"error": "Branch already exists"}));
            }
            let from = serde_json::from_slice::<Value>(body).ok();
            let start = from.as_ref().and_then(|b| b["startingPoint"].as_str()).unwrap_or("main").to_string();
            let Some(commit) = rev_of(&start) else {
                return error(404, Some("RevisionNotFound"), None);
            };
            repo.refs.insert(branch, commit);
            json_answer(200, &json!({}))
        }
        (Method::Post, ["preupload", rev]) => {
            let Some(commit) = rev_of(rev) else {
                return error(404, Some("RevisionNotFound"), None);
            };
            let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let files: Vec<Value> = request["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|f| {
                    let path = f["path"].as_str().unwrap_or_default();
                    let sample = base64::engine::general_purpose::STANDARD
                        .decode(f["sample"].as_str().unwrap_or_default())
                        .unwrap_or_default();
                    let size = f["size"].as_u64().unwrap_or(0) as usize;
                    let lfs = size > 0 && (is_lfs(path, &sample) || size >= 10 << 20);
                    let oid =
                        repo.commits[&commit]
                            .get(path)
                            .map(|b| if is_lfs(path, b) { sha256_hex(b) } else { git_sha1(b) });
                    json!({"path": path, "uploadMode": if lfs { "lfs" } else { "regular" }, "shouldIgnore": false,
                           "oid": oid})
                })
                .collect();
            json_answer(200, &json!({"files": files, "commitOid": commit}))
        }
        (Method::Post, ["commit", rev]) => {
            let branch = decode(rev);
            let Some(head) = repo.refs.get(&branch).cloned() else {
                return error(404, Some("RevisionNotFound"), None);
            };
            let mut files = repo.commits[&head].clone();
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(op) = serde_json::from_slice::<Value>(line) else {
                    return json_answer(400, &json!({"error": "a commit line is not JSON"}));
                };
                let value = &op["value"];
                let path = value["path"].as_str().unwrap_or_default().to_string();
                match op["key"].as_str() {
                    Some("header") => {
                        if let Some(parent) = value["parentCommit"].as_str() {
                            if parent != head {
                                return json_answer(412, &json!({"error": "parentCommit is not the branch head"}));
                            }
                        }
                    }
                    Some("file") => {
                        let Ok(bytes) =
                            base64::engine::general_purpose::STANDARD.decode(value["content"].as_str().unwrap_or(""))
                        else {
                            return json_answer(400, &json!({"error": "bad base64"}));
                        };
                        files.insert(path, bytes);
                    }
                    Some("lfsFile") => {
                        let Some(bytes) = value["oid"].as_str().and_then(|oid| lfs.get(oid)) else {
                            return json_answer(422, &json!({"error": format!("LFS object of {path} not uploaded")}));
                        };
                        files.insert(path, bytes.clone());
                    }
                    Some("deletedFile") => {
                        if files.remove(&path).is_none() {
                            return json_answer(404, &json!({"error": format!("{path} does not exist")}));
                        }
                    }
                    Some("deletedFolder") => {
                        files.retain(|p, _| !p.starts_with(&format!("{}/", path.trim_end_matches('/'))))
                    }
                    _ => return json_answer(400, &json!({"error": "unknown commit line"})),
                }
            }
            let oid = repo.commit(&branch, files);
            json_answer(
                200,
                &json!({"success": true, "commitOid": oid, "commitUrl": format!("{url}/{id}/commit/{oid}"),
                        "hookOutput": ""}),
            )
        }
        _ => error(404, None, None),
    }
}

/// A proxy in front of a [`FakeHub`] that passes every request through on its own connection, except that the
/// answer to the first request whose "METHOD path" contains `part` is cut off halfway through its body and the
/// connection closed: a network that drops mid-transfer.
pub struct Cutter {
    pub url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Cutter {
    pub fn start(target: &str, part: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = target.trim_start_matches("http://").to_string();
        let (stop, part) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Some(part.to_string()))));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let (Ok(client), target, part) = (client, target.clone(), part.clone()) else { continue };
                std::thread::spawn(move || relay(client, &target, &part));
            }
        });
        Self { url, stop, thread: Some(thread) }
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request from `client` to `target` (with `Connection: close`) and its answer back, cut if it matches `part`.
fn relay(client: TcpStream, target: &str, part: &Mutex<Option<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            head.push_str(&line);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let mut upstream = TcpStream::connect(target).unwrap();
    upstream.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes()).unwrap();
    upstream.write_all(&body).unwrap();
    let mut answer = Vec::new();
    let _ = upstream.read_to_end(&mut answer);
    let body_start = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |p| p + 4);
    let mut cut = part.lock().unwrap();
    let matches = cut.as_deref().is_some_and(|p| request_line.contains(p)) && answer.len() > body_start;
    let mut client = client;
    if matches {
        *cut = None;
        let _ = client.write_all(&answer[..body_start + (answer.len() - body_start) / 2]);
    } else {
        let _ = client.write_all(&answer);
    }
    let _ = client.shutdown(Shutdown::Both);
}
