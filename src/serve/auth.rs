//! Bearer keys: when the server has one, every route but /health wants `Authorization: Bearer <key>`.

use axum::http::StatusCode;

use super::api::ApiError;

/// Accepts the `Authorization` header value `given` when it carries `key` (compared in constant time); else the
/// 401 that says whether the key was missing or wrong.
pub fn check_key(key: &str, given: Option<&str>) -> Result<(), ApiError> {
    let given = given.and_then(bearer_token);
    let matches =
        given.is_some_and(|g| g.len() == key.len() && g.bytes().zip(key.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0);
    if matches {
        return Ok(());
    }
    let message = match given {
        None => "no API key: send it as `Authorization: Bearer <key>`",
        Some(_) => "incorrect API key",
    };
    Err(ApiError::with_status(StatusCode::UNAUTHORIZED, "invalid_api_key", message))
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive (RFC 7235), and the
/// space after it may be several.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start())
}
