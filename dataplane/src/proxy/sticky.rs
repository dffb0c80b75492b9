//! Cookie persistence hooks for requests and responses held as header maps (HTTP/2
//! clients): the group's rule applied with the pure functions of `persist`.

use std::sync::Arc;

use http::HeaderMap;

use super::Group;
use super::backend::Backend;
use super::persist;

/// The backend a request's persistence cookie names (the cookie removed when indirect).
pub fn request(group: &Group, headers: &mut HeaderMap) -> Option<usize> {
    let rule = group.cookie.as_ref()?;
    let value = persist::take_from(headers, rule)?;
    group.cookie_backend(&value)
}

/// Sets the persistence cookie on a response from `backend`, unless the request's
/// cookie (naming `cookie`) pinned it there already.
pub fn response(
    group: &Group,
    cookie: Option<usize>,
    backend: &Arc<Backend>,
    headers: &mut HeaderMap,
) {
    let Some(rule) = group.cookie.as_ref() else {
        return;
    };
    let Some(chosen) = group.index_of(backend) else {
        return;
    };
    if let Some(value) = group.cookie_value(chosen)
        && persist::must_insert(cookie, chosen)
    {
        persist::set_on(headers, rule, value);
    }
}
