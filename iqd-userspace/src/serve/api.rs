//! The HTTP side of `iqd serve`: authentication, routes under /v1, the VPC API's resource
//! shapes, pagination and errors. Reads answer from the committed state; changes go to the
//! writer ([`super::App::change`]).
use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::model::{self, Doc, Group, Interface, Remote, Rule, Server, Subnet, Vpc};
use super::{ApiError, App};
use crate::domain::PROFILES;

type Res = Result<(u16, Value), ApiError>;

/// The one handler: every request, every path.
pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if authorized(&app, &headers) && method == Method::GET && uri.path() == "/metrics" {
        return match app.metrics().await {
            Ok(text) => (
                StatusCode::OK,
                [("content-type", "text/plain; version=0.0.4")],
                text,
            )
                .into_response(),
            Err(e) => (
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                axum::Json(e.body()),
            )
                .into_response(),
        };
    }
    let result = if authorized(&app, &headers) {
        route(&app, &method, &uri, &body).await
    } else {
        Err(ApiError::new(
            401,
            "not_authorized",
            "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token \
             `iqd serve` printed the path of",
        ))
    };
    let (status, body) = match result {
        Ok((status, body)) => (status, body),
        Err(e) => (e.status, e.body()),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    (status, axum::Json(body)).into_response()
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    // Compared in full whatever differs first.
    scheme.eq_ignore_ascii_case("bearer")
        && token.trim().len() == app.token.len()
        && token
            .trim()
            .bytes()
            .zip(app.token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Query parameters, percent-decoded.
fn query(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(app: &Arc<App>, method: &Method, uri: &Uri, body: &[u8]) -> Res {
    let path = uri.path().trim_end_matches('/');
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err(not_found_path(path));
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let q = query(uri);
    let m = method.as_str();
    // A body is parsed before anything else, so malformed JSON is always its own error.
    let json = if matches!(m, "POST" | "PATCH" | "PUT") && !body.is_empty() {
        Some(serde_json::from_slice::<Value>(body).map_err(|e| {
            ApiError::new(
                400,
                "malformed_json",
                format!("the request body is not valid JSON: {e}"),
            )
        })?)
    } else {
        None
    };
    let obj = || -> Result<Map<String, Value>, ApiError> {
        match &json {
            Some(Value::Object(o)) => Ok(o.clone()),
            None => Ok(Map::new()),
            Some(_) => Err(ApiError::new(
                400,
                "malformed_json",
                "the request body must be a JSON object",
            )),
        }
    };
    let doc = app.read();
    let b = app.base.clone();
    match (m, segs.as_slice()) {
        ("GET", ["vpcs"]) => page(
            &b,
            "vpcs",
            &q,
            doc.vpc.iter().map(|v| vpc_view(&b, &doc, v)).collect(),
        ),
        ("POST", ["vpcs"]) => {
            let o = obj()?;
            app.change(Box::new(move |d| create_vpc(&b, d, &o))).await
        }
        ("GET", ["vpcs", id]) => find_vpc(&doc, id).map(|v| (200, vpc_view(&b, &doc, v))),
        ("DELETE", ["vpcs", id]) => {
            let id = id.to_string();
            app.change(Box::new(move |d| delete_vpc(d, &id))).await
        }
        ("GET", ["subnets"]) => page(
            &b,
            "subnets",
            &q,
            doc.subnets
                .iter()
                .map(|s| subnet_view(&b, &doc, s))
                .collect(),
        ),
        ("POST", ["subnets"]) => {
            let o = obj()?;
            app.change(Box::new(move |d| create_subnet(&b, d, &o)))
                .await
        }
        ("GET", ["subnets", id]) => find_subnet(&doc, id).map(|s| (200, subnet_view(&b, &doc, s))),
        ("DELETE", ["subnets", id]) => {
            let id = id.to_string();
            app.change(Box::new(move |d| delete_subnet(d, &id))).await
        }
        ("GET", ["bare_metal_server", "profiles"]) => page(
            &b,
            "profiles",
            &q,
            PROFILES.iter().map(|p| profile_view(&b, p)).collect(),
        ),
        ("GET", ["bare_metal_server", "profiles", name]) => PROFILES
            .iter()
            .find(|p| p.name == *name)
            .map(|p| (200, profile_view(&b, p)))
            .ok_or_else(|| unknown_profile(name, 404)),
        ("GET", ["bare_metal_servers"]) => page(
            &b,
            "bare_metal_servers",
            &q,
            doc.servers
                .iter()
                .map(|s| server_view(&b, &doc, s))
                .collect(),
        ),
        ("POST", ["bare_metal_servers"]) => {
            let o = obj()?;
            app.change(Box::new(move |d| create_server(&b, d, &o)))
                .await
        }
        ("GET", ["bare_metal_servers", id]) => {
            find_server(&doc, id).map(|s| (200, server_view(&b, &doc, s)))
        }
        ("PATCH", ["bare_metal_servers", id]) => {
            let (o, id) = (obj()?, id.to_string());
            app.change(Box::new(move |d| {
                let s = server_mut(d, &id)?;
                if let Some(name) = opt_str(&o, "name")? {
                    s.name = name;
                }
                let s = s.clone();
                Ok((200, server_view(&b, d, &s)))
            }))
            .await
        }
        ("DELETE", ["bare_metal_servers", id]) => {
            let id = id.to_string();
            app.change(Box::new(move |d| {
                find_server(d, &id)?;
                d.servers.retain(|s| s.id != id);
                Ok((204, Value::Null))
            }))
            .await
        }
        ("POST", ["bare_metal_servers", id, action @ ("start" | "stop")]) => {
            let (o, id, action) = (obj()?, id.to_string(), action.to_string());
            if action == "stop" {
                match opt_str(&o, "type")?.as_deref() {
                    None | Some("hard") | Some("soft") => {}
                    Some(t) => {
                        return Err(ApiError::new(
                            400,
                            "validation_invalid_argument",
                            format!("stop type {t:?}: use \"hard\" or \"soft\""),
                        ))
                    }
                }
            }
            app.change(Box::new(move |d| {
                let s = server_mut(d, &id)?;
                s.status = if action == "stop" {
                    "stopped"
                } else {
                    "running"
                }
                .into();
                Ok((204, Value::Null))
            }))
            .await
        }
        ("GET", ["bare_metal_servers", id, "network_interfaces"]) => {
            let s = find_server(&doc, id)?;
            page(
                &b,
                &format!("bare_metal_servers/{id}/network_interfaces"),
                &q,
                s.interfaces
                    .iter()
                    .map(|i| nic_view(&b, &doc, s, i))
                    .collect(),
            )
            .map(|(st, mut v)| {
                // The collection's key is `network_interfaces`.
                if let Some(items) = v
                    .as_object_mut()
                    .and_then(|o| o.remove(&format!("bare_metal_servers/{id}/network_interfaces")))
                {
                    v["network_interfaces"] = items;
                }
                (st, v)
            })
        }
        ("POST", ["bare_metal_servers", id, "network_interfaces"]) => {
            let (o, id) = (obj()?, id.to_string());
            app.change(Box::new(move |d| add_interface(&b, d, &id, &o)))
                .await
        }
        ("GET", ["bare_metal_servers", id, "network_interfaces", nic]) => {
            let s = find_server(&doc, id)?;
            let i = find_nic(s, nic)?;
            Ok((200, nic_view(&b, &doc, s, i)))
        }
        ("PATCH", ["bare_metal_servers", id, "network_interfaces", nic]) => {
            let (o, id, nic) = (obj()?, id.to_string(), nic.to_string());
            app.change(Box::new(move |d| {
                let s = server_mut(d, &id)?;
                let i = s
                    .interfaces
                    .iter_mut()
                    .find(|i| i.id == nic)
                    .ok_or_else(|| not_found("network_interface", &nic))?;
                if let Some(name) = opt_str(&o, "name")? {
                    i.name = name;
                }
                if let Some(v) = o.get("allow_ip_spoofing") {
                    i.allow_ip_spoofing = v.as_bool().ok_or_else(|| {
                        ApiError::new(
                            400,
                            "validation_invalid_argument",
                            "allow_ip_spoofing must be a boolean",
                        )
                    })?;
                }
                let (s, i) = d
                    .interface(&nic)
                    .map(|(s, i)| (s.clone(), i.clone()))
                    .expect("found above");
                Ok((200, nic_view(&b, d, &s, &i)))
            }))
            .await
        }
        ("DELETE", ["bare_metal_servers", id, "network_interfaces", nic]) => {
            let (id, nic) = (id.to_string(), nic.to_string());
            app.change(Box::new(move |d| {
                let s = server_mut(d, &id)?;
                let pos = s
                    .interfaces
                    .iter()
                    .position(|i| i.id == nic)
                    .ok_or_else(|| not_found("network_interface", &nic))?;
                if pos == 0 {
                    return Err(ApiError::new(
                        409,
                        "primary_network_interface_not_deletable",
                        format!("network interface {nic} is the primary interface of bare metal server {id}"),
                    ));
                }
                must_be_stopped(s, "removed")?;
                s.interfaces.remove(pos);
                Ok((204, Value::Null))
            }))
            .await
        }
        ("GET", ["security_groups"]) => page(
            &b,
            "security_groups",
            &q,
            doc.security_groups
                .iter()
                .map(|g| group_view(&b, &doc, g))
                .collect(),
        ),
        ("POST", ["security_groups"]) => {
            let o = obj()?;
            app.change(Box::new(move |d| create_group(&b, d, &o))).await
        }
        ("GET", ["security_groups", id]) => {
            find_group(&doc, id).map(|g| (200, group_view(&b, &doc, g)))
        }
        ("PATCH", ["security_groups", id]) => {
            let (o, id) = (obj()?, id.to_string());
            app.change(Box::new(move |d| {
                let g = group_mut(d, &id)?;
                if let Some(name) = opt_str(&o, "name")? {
                    g.name = name;
                }
                let g = g.clone();
                Ok((200, group_view(&b, d, &g)))
            }))
            .await
        }
        ("DELETE", ["security_groups", id]) => {
            let id = id.to_string();
            app.change(Box::new(move |d| delete_group(d, &id))).await
        }
        ("GET", ["security_groups", id, "rules"]) => {
            let g = find_group(&doc, id)?;
            Ok((
                200,
                json!({ "rules": g.rules.iter().map(|r| rule_view(&b, &doc, g, r)).collect::<Vec<_>>() }),
            ))
        }
        ("POST", ["security_groups", id, "rules"]) => {
            let (o, id) = (obj()?, id.to_string());
            app.change(Box::new(move |d| {
                find_group(d, &id)?;
                let mut rule = parse_rule(d, &o)?;
                rule.id = d.new_id(0x5e);
                let g = group_mut(d, &id)?;
                g.rules.push(rule.clone());
                let g = g.clone();
                Ok((201, rule_view(&b, d, &g, &rule)))
            }))
            .await
        }
        ("GET", ["security_groups", id, "rules", rule]) => {
            let g = find_group(&doc, id)?;
            let r = find_rule(g, rule)?;
            Ok((200, rule_view(&b, &doc, g, r)))
        }
        ("PATCH", ["security_groups", id, "rules", rule]) => {
            let (o, id, rule) = (obj()?, id.to_string(), rule.to_string());
            app.change(Box::new(move |d| {
                let g = find_group(d, &id)?;
                let old = find_rule(g, &rule)?.clone();
                // The rule as it is, with the fields the patch gives.
                let mut proto = rule_view("", d, g, &old)
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for (k, v) in &o {
                    proto.insert(k.clone(), v.clone());
                }
                if o.get("remote")
                    .is_some_and(|r| r.as_object().is_some_and(|m| m.is_empty()))
                {
                    proto.remove("remote");
                }
                let mut new = parse_rule(d, &proto)?;
                new.id = old.id.clone();
                new.created_at = old.created_at.clone();
                let g = group_mut(d, &id)?;
                if let Some(r) = g.rules.iter_mut().find(|r| r.id == rule) {
                    *r = new.clone();
                }
                let g = g.clone();
                Ok((200, rule_view(&b, d, &g, &new)))
            }))
            .await
        }
        ("DELETE", ["security_groups", id, "rules", rule]) => {
            let (id, rule) = (id.to_string(), rule.to_string());
            app.change(Box::new(move |d| {
                let g = group_mut(d, &id)?;
                let before = g.rules.len();
                g.rules.retain(|r| r.id != rule);
                if g.rules.len() == before {
                    return Err(not_found("security_group_rule", &rule));
                }
                Ok((204, Value::Null))
            }))
            .await
        }
        ("GET", ["security_groups", id, "targets"]) => {
            find_group(&doc, id)?;
            page(
                &b,
                &format!("security_groups/{id}/targets"),
                &q,
                targets(&b, &doc, id),
            )
            .map(|(st, mut v)| {
                if let Some(items) = v
                    .as_object_mut()
                    .and_then(|o| o.remove(&format!("security_groups/{id}/targets")))
                {
                    v["targets"] = items;
                }
                (st, v)
            })
        }
        ("GET", ["security_groups", id, "targets", target]) => {
            find_group(&doc, id)?;
            let (s, i) = doc
                .interface(target)
                .ok_or_else(|| not_found("network_interface", target))?;
            if !i.security_groups.iter().any(|g| g == id) {
                return Err(not_found("security_group_target", target));
            }
            Ok((200, target_view(&b, s, i)))
        }
        ("PUT", ["security_groups", id, "targets", target]) => {
            let (id, target) = (id.to_string(), target.to_string());
            app.change(Box::new(move |d| {
                find_group(d, &id)?;
                let i = interface_mut(d, &target)?;
                let status = if i.security_groups.contains(&id) {
                    200
                } else {
                    if i.security_groups.len() >= crate::config::MAX_GROUPS_PER_NIC {
                        return Err(ApiError::new(
                            400,
                            "security_group_limit_exceeded",
                            format!(
                                "network interface {target} has {} security groups already",
                                i.security_groups.len()
                            ),
                        ));
                    }
                    i.security_groups.push(id.clone());
                    201
                };
                let (s, i) = d
                    .interface(&target)
                    .map(|(s, i)| (s.clone(), i.clone()))
                    .expect("found above");
                Ok((status, target_view(&b, &s, &i)))
            }))
            .await
        }
        ("DELETE", ["security_groups", id, "targets", target]) => {
            let (id, target) = (id.to_string(), target.to_string());
            app.change(Box::new(move |d| {
                find_group(d, &id)?;
                let i = interface_mut(d, &target)?;
                if !i.security_groups.contains(&id) {
                    return Err(not_found("security_group_target", &target));
                }
                if i.security_groups.len() == 1 {
                    return Err(ApiError::new(
                        409,
                        "security_group_target_last_group",
                        format!("security group {id} is the only group of network interface {target}: a network interface keeps at least one"),
                    ));
                }
                i.security_groups.retain(|g| *g != id);
                Ok((204, Value::Null))
            }))
            .await
        }
        _ if known_collection(&segs) => Err(ApiError::new(
            405,
            "method_not_allowed",
            format!("{m} is not allowed on {path}"),
        )),
        _ => Err(not_found_path(path)),
    }
}

fn known_collection(segs: &[&str]) -> bool {
    matches!(
        segs.first(),
        Some(
            &("vpcs" | "subnets" | "bare_metal_servers" | "bare_metal_server" | "security_groups")
        )
    ) && segs.len() <= 4
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::new(404, "not_found", format!("no such path: {path}"))
}

/// `<kind>_not_found`: the code of an unknown id of each resource type.
fn not_found(kind: &str, id: &str) -> ApiError {
    let code = match kind {
        "vpc" => "vpc_not_found",
        "subnet" => "subnet_not_found",
        "bare_metal_server" => "bare_metal_server_not_found",
        "network_interface" => "network_interface_not_found",
        "security_group" => "security_group_not_found",
        "security_group_rule" => "security_group_rule_not_found",
        "security_group_target" => "security_group_target_not_found",
        _ => "not_found",
    };
    ApiError::new(
        404,
        code,
        format!("{} {id} not found", kind.replace('_', " ")),
    )
}

fn unknown_profile(name: &str, status: u16) -> ApiError {
    let known: Vec<&str> = PROFILES.iter().map(|p| p.name).collect();
    ApiError::new(
        status,
        "bare_metal_server_profile_not_found",
        format!(
            "bare metal server profile {name:?} not found; profiles: {}",
            known.join(", ")
        ),
    )
}

fn find_vpc<'a>(d: &'a Doc, id: &str) -> Result<&'a Vpc, ApiError> {
    d.vpc
        .as_ref()
        .filter(|v| v.id == id)
        .ok_or_else(|| not_found("vpc", id))
}
fn find_subnet<'a>(d: &'a Doc, id: &str) -> Result<&'a Subnet, ApiError> {
    d.subnet(id).ok_or_else(|| not_found("subnet", id))
}
fn find_server<'a>(d: &'a Doc, id: &str) -> Result<&'a Server, ApiError> {
    d.server(id)
        .ok_or_else(|| not_found("bare_metal_server", id))
}
fn find_group<'a>(d: &'a Doc, id: &str) -> Result<&'a Group, ApiError> {
    d.group(id).ok_or_else(|| not_found("security_group", id))
}
fn find_nic<'a>(s: &'a Server, id: &str) -> Result<&'a Interface, ApiError> {
    s.interfaces
        .iter()
        .find(|i| i.id == id)
        .ok_or_else(|| not_found("network_interface", id))
}
fn find_rule<'a>(g: &'a Group, id: &str) -> Result<&'a Rule, ApiError> {
    g.rules
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| not_found("security_group_rule", id))
}
fn server_mut<'a>(d: &'a mut Doc, id: &str) -> Result<&'a mut Server, ApiError> {
    d.servers
        .iter_mut()
        .find(|s| s.id == id)
        .ok_or_else(|| not_found("bare_metal_server", id))
}
fn group_mut<'a>(d: &'a mut Doc, id: &str) -> Result<&'a mut Group, ApiError> {
    d.security_groups
        .iter_mut()
        .find(|g| g.id == id)
        .ok_or_else(|| not_found("security_group", id))
}
fn interface_mut<'a>(d: &'a mut Doc, id: &str) -> Result<&'a mut Interface, ApiError> {
    d.servers
        .iter_mut()
        .flat_map(|s| s.interfaces.iter_mut())
        .find(|i| i.id == id)
        .ok_or_else(|| not_found("network_interface", id))
}

fn must_be_stopped(s: &Server, verb: &str) -> Result<(), ApiError> {
    if s.status == "stopped" {
        return Ok(());
    }
    Err(ApiError::new(
        409,
        "bare_metal_server_not_stopped",
        format!(
            "bare metal server {} ({}) is {}: network interfaces are {verb} only while it is stopped",
            s.name, s.id, s.status
        ),
    ))
}

// ---- request fields ----

fn opt_str(o: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::new(
            400,
            "validation_invalid_argument",
            format!("{key} must be a string"),
        )),
    }
}

fn required<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a Value, ApiError> {
    o.get(key).filter(|v| !v.is_null()).ok_or_else(|| {
        ApiError::new(
            400,
            "validation_required_field_missing",
            format!("{key} is required"),
        )
    })
}

/// The id an identity names: `id`, or the last part of `href` or `crn`.
fn ident(v: &Value) -> Option<String> {
    if let Some(id) = v.get("id").and_then(Value::as_str) {
        return Some(id.to_string());
    }
    if let Some(href) = v.get("href").and_then(Value::as_str) {
        return href.rsplit('/').next().map(str::to_string);
    }
    v.get("crn")
        .and_then(Value::as_str)
        .and_then(|c| c.rsplit(':').next())
        .map(str::to_string)
}

fn name_or(o: &Map<String, Value>, default: String) -> Result<String, ApiError> {
    Ok(opt_str(o, "name")?.unwrap_or(default))
}

fn the_vpc(d: &Doc, o: &Map<String, Value>) -> Result<Vpc, ApiError> {
    let vpc = d
        .vpc
        .clone()
        .ok_or_else(|| not_found("vpc", "(none created)"))?;
    if let Some(v) = o.get("vpc") {
        let id = ident(v).unwrap_or_default();
        if id != vpc.id {
            return Err(not_found("vpc", &id));
        }
    }
    Ok(vpc)
}

// ---- changes ----

fn create_vpc(b: &str, d: &mut Doc, o: &Map<String, Value>) -> Res {
    if let Some(v) = &d.vpc {
        return Err(ApiError::new(
            409,
            "vpc_limit_reached",
            format!(
                "iqd serve manages one fabric: VPC {} ({}) exists",
                v.name, v.id
            ),
        ));
    }
    let name = name_or(o, "iqd".into())?;
    if name.is_empty()
        || name.len() > 12
        || !name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err(ApiError::new(
            400,
            "validation_invalid_argument",
            format!("VPC name {name:?}: the fabric's name is 1-12 characters of a-z, 0-9, -"),
        ));
    }
    let sg = d.new_id(0x5c);
    let id = d.new_id(0x7c);
    let now = model::now();
    let (inbound, outbound) = (d.new_id(0x5e), d.new_id(0x5e));
    d.security_groups.push(Group {
        id: sg.clone(),
        name: "default".into(),
        created_at: now.clone(),
        rules: vec![
            Rule {
                id: inbound,
                created_at: now.clone(),
                direction: "inbound".into(),
                protocol: "all".into(),
                port_min: None,
                port_max: None,
                icmp_type: None,
                code: None,
                remote: Remote::Group(sg.clone()),
            },
            Rule {
                id: outbound,
                created_at: now.clone(),
                direction: "outbound".into(),
                protocol: "all".into(),
                port_min: None,
                port_max: None,
                icmp_type: None,
                code: None,
                remote: Remote::Any,
            },
        ],
    });
    let vpc = Vpc {
        id,
        name,
        created_at: now,
        default_security_group: sg,
    };
    d.vpc = Some(vpc.clone());
    Ok((201, vpc_view(b, d, &vpc)))
}

fn delete_vpc(d: &mut Doc, id: &str) -> Res {
    find_vpc(d, id)?;
    if !d.subnets.is_empty() || !d.servers.is_empty() {
        return Err(ApiError::new(
            409,
            "vpc_in_use",
            format!(
                "VPC {id} still has {} subnets and {} bare metal servers",
                d.subnets.len(),
                d.servers.len()
            ),
        ));
    }
    d.vpc = None;
    d.security_groups.clear();
    Ok((204, Value::Null))
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let addr: Ipv4Addr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok().filter(|p| (8..=29).contains(p))?;
    let mask = crate::domain::prefix_mask(prefix);
    (u32::from(addr) & !mask == 0).then_some((addr, prefix))
}

fn create_subnet(b: &str, d: &mut Doc, o: &Map<String, Value>) -> Res {
    the_vpc(d, o)?;
    let cidr = opt_str(o, "ipv4_cidr_block")?.ok_or_else(|| {
        ApiError::new(
            400,
            "validation_required_field_missing",
            "ipv4_cidr_block is required (iqd does not pick blocks by total_ipv4_address_count)",
        )
    })?;
    let (network, prefix) = parse_cidr(&cidr).ok_or_else(|| {
        ApiError::new(
            400,
            "validation_invalid_argument",
            format!("ipv4_cidr_block {cidr:?}: write a.b.c.d/n, n 8-29, no host bits set"),
        )
    })?;
    let mask = crate::domain::prefix_mask(prefix);
    if let Some(other) = d.subnets.iter().find(|s| {
        let m = crate::domain::prefix_mask(s.prefix.min(prefix));
        u32::from(s.network) & m == u32::from(network) & m
    }) {
        return Err(ApiError::new(
            409,
            "subnet_cidr_conflict",
            format!(
                "{cidr} overlaps subnet {} ({}/{})",
                other.name, other.network, other.prefix
            ),
        ));
    }
    let _ = mask;
    let chpid = match opt_str(o, "chpid")? {
        Some(c) => {
            let id = (c.len() == 2)
                .then(|| u8::from_str_radix(&c, 16).ok())
                .flatten()
                .ok_or_else(|| {
                    ApiError::new(
                        400,
                        "validation_invalid_argument",
                        format!("chpid {c:?}: two hex digits"),
                    )
                })?;
            if d.subnets.iter().any(|s| s.chpid == id) {
                return Err(ApiError::new(
                    409,
                    "chpid_in_use",
                    format!("CHPID {id:02X} is another subnet's"),
                ));
            }
            id
        }
        None => (0xf0..=0xffu8)
            .chain(0..0xf0)
            .find(|c| !d.subnets.iter().any(|s| s.chpid == *c))
            .ok_or_else(|| ApiError::new(409, "chpid_in_use", "every CHPID is in use"))?,
    };
    let mfs = opt_str(o, "mfs")?.unwrap_or_else(|| "16K".into());
    let mfs = crate::domain::Mfs::from_label(&mfs).ok_or_else(|| {
        ApiError::new(
            400,
            "validation_invalid_argument",
            format!("mfs {mfs:?}: 16K, 24K, 40K or 64K"),
        )
    })?;
    let id = d.new_id(0x5b);
    let subnet = Subnet {
        name: name_or(o, format!("subnet-{:02x}", chpid))?,
        id,
        created_at: model::now(),
        network,
        prefix,
        chpid,
        mfs: mfs.label().to_string(),
    };
    d.subnets.push(subnet.clone());
    Ok((201, subnet_view(b, d, &subnet)))
}

fn delete_subnet(d: &mut Doc, id: &str) -> Res {
    find_subnet(d, id)?;
    let users: Vec<String> = d
        .servers
        .iter()
        .filter(|s| s.interfaces.iter().any(|i| i.subnet == id))
        .map(|s| s.name.clone())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::new(
            409,
            "subnet_in_use",
            format!("subnet {id} has network interfaces of {}", users.join(", ")),
        ));
    }
    d.subnets.retain(|s| s.id != id);
    Ok((204, Value::Null))
}

fn create_server(b: &str, d: &mut Doc, o: &Map<String, Value>) -> Res {
    let vpc = the_vpc(d, o)?;
    let profile = required(o, "profile")?;
    let pname = profile
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| ident(profile))
        .unwrap_or_default();
    let profile = PROFILES
        .iter()
        .find(|p| p.name == pname)
        .ok_or_else(|| unknown_profile(&pname, 400))?;
    let mut protos = vec![required(o, "primary_network_interface")?.clone()];
    if let Some(more) = o.get("network_interfaces") {
        protos.extend(more.as_array().cloned().ok_or_else(|| {
            ApiError::new(
                400,
                "validation_invalid_argument",
                "network_interfaces must be an array",
            )
        })?);
    }
    if protos.len() > profile.interfaces {
        return Err(limit(profile.name, profile.interfaces));
    }
    let id = d.new_id(0x2b);
    let seq = d.next_id;
    let name = name_or(o, format!("server-{seq}"))?;
    let mut server = Server {
        id,
        netns: name.clone(),
        name,
        created_at: model::now(),
        lpar: format!("S{:06X}", seq & 0xff_ffff),
        profile: profile.name.to_string(),
        status: "running".into(),
        interfaces: Vec::new(),
    };
    for (k, proto) in protos.iter().enumerate() {
        let proto = proto.as_object().cloned().ok_or_else(|| {
            ApiError::new(
                400,
                "validation_invalid_argument",
                "a network interface prototype is an object",
            )
        })?;
        let i = new_interface(d, &server, &proto, k)?;
        server.interfaces.push(i);
    }
    let _ = vpc;
    d.servers.push(server.clone());
    Ok((201, server_view(b, d, &server)))
}

fn limit(profile: &str, n: usize) -> ApiError {
    ApiError::new(
        400,
        "network_interface_limit_exceeded",
        format!(
            "profile {profile} has {n} network interface{}",
            if n == 1 { "" } else { "s" }
        ),
    )
}

fn add_interface(b: &str, d: &mut Doc, id: &str, o: &Map<String, Value>) -> Res {
    let server = find_server(d, id)?.clone();
    must_be_stopped(&server, "added")?;
    let n = PROFILES
        .iter()
        .find(|p| p.name == server.profile)
        .map(|p| p.interfaces)
        .unwrap_or(crate::config::DEFAULT_MAX_NICS_PER_LPAR);
    if server.interfaces.len() >= n {
        return Err(limit(&server.profile, n));
    }
    let i = new_interface(d, &server, o, server.interfaces.len())?;
    server_mut(d, id)?.interfaces.push(i.clone());
    let server = find_server(d, id)?.clone();
    Ok((201, nic_view(b, d, &server, &i)))
}

/// A new interface of `server` from its prototype (the `k`th of the server).
fn new_interface(
    d: &mut Doc,
    server: &Server,
    o: &Map<String, Value>,
    k: usize,
) -> Result<Interface, ApiError> {
    if let Some(t) = opt_str(o, "interface_type")? {
        if t != "hipersocket" {
            return Err(ApiError::new(
                400,
                "validation_invalid_argument",
                format!("interface_type {t:?}: iqd's interfaces are \"hipersocket\""),
            ));
        }
    }
    let sid = ident(required(o, "subnet")?).unwrap_or_default();
    let subnet = find_subnet(d, &sid)?.clone();
    let mask = crate::domain::prefix_mask(subnet.prefix);
    let net = u32::from(subnet.network);
    let broadcast = net | !mask;
    let used = |a: Ipv4Addr| {
        d.servers
            .iter()
            .chain(std::iter::once(server))
            .flat_map(|s| s.interfaces.iter())
            .any(|i| i.subnet == subnet.id && i.address == a)
    };
    let address = match o.get("primary_ip").and_then(|p| p.get("address")) {
        Some(a) => {
            let s = a.as_str().unwrap_or_default();
            let a: Ipv4Addr = s.parse().map_err(|_| {
                ApiError::new(
                    400,
                    "validation_invalid_argument",
                    format!("primary_ip.address {s:?} is not an IPv4 address"),
                )
            })?;
            let v = u32::from(a);
            if v & mask != net || v == net || v == broadcast {
                return Err(ApiError::new(
                    400,
                    "ip_address_outside_subnet",
                    format!(
                        "{a} is not a host address of subnet {} ({}/{})",
                        subnet.name, subnet.network, subnet.prefix
                    ),
                ));
            }
            if used(a) {
                return Err(ApiError::new(
                    409,
                    "ip_address_in_use",
                    format!("{a} is in use in subnet {}", subnet.name),
                ));
            }
            a
        }
        // As the cloud: the first four addresses are the network's.
        None => (net + 4..broadcast)
            .map(Ipv4Addr::from)
            .find(|a| !used(*a))
            .ok_or_else(|| {
                ApiError::new(
                    409,
                    "subnet_exhausted",
                    format!("subnet {} has no free address", subnet.name),
                )
            })?,
    };
    let default_group = d
        .vpc
        .as_ref()
        .map(|v| v.default_security_group.clone())
        .unwrap_or_default();
    let groups = match o.get("security_groups") {
        None | Some(Value::Null) => vec![default_group],
        Some(Value::Array(a)) => {
            let mut ids = Vec::new();
            for g in a {
                let id = ident(g).unwrap_or_default();
                find_group(d, &id)?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            if ids.is_empty() || ids.len() > crate::config::MAX_GROUPS_PER_NIC {
                return Err(ApiError::new(
                    400,
                    "security_group_limit_exceeded",
                    "a network interface has 1-5 security groups",
                ));
            }
            ids
        }
        Some(_) => {
            return Err(ApiError::new(
                400,
                "validation_invalid_argument",
                "security_groups must be an array",
            ))
        }
    };
    let allow = match o.get("allow_ip_spoofing") {
        None | Some(Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            ApiError::new(
                400,
                "validation_invalid_argument",
                "allow_ip_spoofing must be a boolean",
            )
        })?,
    };
    let ifname = (0..)
        .map(|n| format!("hsi{n}"))
        .find(|n| !server.interfaces.iter().any(|i| &i.ifname == n))
        .unwrap_or_default();
    Ok(Interface {
        id: d.new_id(0x1c),
        name: name_or(o, format!("eth{k}"))?,
        created_at: model::now(),
        ifname,
        subnet: subnet.id,
        address,
        allow_ip_spoofing: allow,
        security_groups: groups,
    })
}

fn create_group(b: &str, d: &mut Doc, o: &Map<String, Value>) -> Res {
    the_vpc(d, o)?;
    let id = d.new_id(0x5c);
    let name = name_or(o, format!("sg-{}", d.next_id))?;
    d.security_groups.push(Group {
        id: id.clone(),
        name,
        created_at: model::now(),
        rules: Vec::new(),
    });
    if let Some(rules) = o.get("rules") {
        let rules = rules
            .as_array()
            .cloned()
            .ok_or_else(|| bad_rule("rules must be an array".into()))?;
        for r in rules {
            let r = r
                .as_object()
                .cloned()
                .ok_or_else(|| bad_rule("a rule is an object".into()))?;
            let mut rule = parse_rule(d, &r)?;
            rule.id = d.new_id(0x5e);
            group_mut(d, &id)?.rules.push(rule);
        }
    }
    let g = find_group(d, &id)?.clone();
    Ok((201, group_view(b, d, &g)))
}

fn delete_group(d: &mut Doc, id: &str) -> Res {
    find_group(d, id)?;
    if d.vpc
        .as_ref()
        .is_some_and(|v| v.default_security_group == id)
    {
        return Err(ApiError::new(
            409,
            "security_group_in_use",
            format!("security group {id} is the VPC's default group"),
        ));
    }
    let targets: Vec<&str> = d
        .servers
        .iter()
        .flat_map(|s| s.interfaces.iter())
        .filter(|i| i.security_groups.iter().any(|g| g == id))
        .map(|i| i.id.as_str())
        .collect();
    let remotes = d
        .security_groups
        .iter()
        .filter(|g| {
            g.id != id
                && g.rules
                    .iter()
                    .any(|r| r.remote == Remote::Group(id.to_string()))
        })
        .count();
    if !targets.is_empty() || remotes > 0 {
        return Err(ApiError::new(
            409,
            "security_group_in_use",
            format!(
                "security group {id} has targets ({}) or is the remote of {remotes} groups' rules",
                targets.join(", ")
            ),
        ));
    }
    d.security_groups.retain(|g| g.id != id);
    Ok((204, Value::Null))
}

fn bad_rule(message: String) -> ApiError {
    ApiError::new(400, "security_group_rule_invalid", message)
}

fn parse_rule(d: &Doc, o: &Map<String, Value>) -> Result<Rule, ApiError> {
    let s = |k: &str| opt_str(o, k).map_err(|e| bad_rule(e.message));
    let direction = s("direction")?
        .ok_or_else(|| bad_rule("direction is required: inbound or outbound".into()))?;
    if direction != "inbound" && direction != "outbound" {
        return Err(bad_rule(format!(
            "direction {direction:?}: inbound or outbound"
        )));
    }
    if let Some(v) = s("ip_version")? {
        if v != "ipv4" {
            return Err(bad_rule(format!("ip_version {v:?}: ipv4")));
        }
    }
    let protocol = match s("protocol")?.as_deref() {
        None | Some("any") | Some("icmp_tcp_udp") => "all".to_string(),
        Some(p) => p.to_string(),
    };
    let int = |k: &str, max: u64| -> Result<Option<u64>, ApiError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| bad_rule(format!("{k} must be an integer 0-{max}"))),
        }
    };
    let (mut port_min, mut port_max, mut icmp_type, mut code) = (None, None, None, None);
    match protocol.as_str() {
        "all" => {
            for k in ["port_min", "port_max", "type", "code"] {
                if o.get(k).is_some_and(|v| !v.is_null()) {
                    return Err(bad_rule(format!("{k} does not go with protocol all")));
                }
            }
        }
        "tcp" | "udp" => {
            let (a, z) = (int("port_min", 65535)?, int("port_max", 65535)?);
            if a.is_some() || z.is_some() {
                let (a, z) = (a.unwrap_or(1), z.unwrap_or(65535));
                if a == 0 || a > z {
                    return Err(bad_rule(format!(
                        "ports {a}-{z}: 1-65535 and port_min <= port_max"
                    )));
                }
                if !(a == 1 && z == 65535) {
                    port_min = Some(a as u16);
                    port_max = Some(z as u16);
                }
            }
            if o.get("type").is_some_and(|v| !v.is_null())
                || o.get("code").is_some_and(|v| !v.is_null())
            {
                return Err(bad_rule(format!(
                    "type and code do not go with protocol {protocol}"
                )));
            }
        }
        "icmp" => {
            icmp_type = int("type", 254)?.map(|t| t as u8);
            code = int("code", 255)?.map(|c| c as u8);
            if code.is_some() && icmp_type.is_none() {
                return Err(bad_rule("code needs a type".into()));
            }
            if o.get("port_min").is_some_and(|v| !v.is_null())
                || o.get("port_max").is_some_and(|v| !v.is_null())
            {
                return Err(bad_rule("ports do not go with protocol icmp".into()));
            }
        }
        p => return Err(bad_rule(format!("protocol {p:?}: all, tcp, udp or icmp"))),
    }
    let remote = match o.get("remote") {
        None | Some(Value::Null) => Remote::Any,
        Some(r) => {
            if r.get("cidr_block").and_then(Value::as_str) == Some("0.0.0.0/0") {
                Remote::Any
            } else if let Some(c) = r.get("cidr_block").and_then(Value::as_str) {
                crate::config::parse_remote(c)
                    .map_err(|e| bad_rule(format!("remote.cidr_block: {e}")))?;
                Remote::CidrBlock(c.to_string())
            } else if let Some(a) = r.get("address").and_then(Value::as_str) {
                let _: Ipv4Addr = a.parse().map_err(|_| {
                    bad_rule(format!("remote.address {a:?} is not an IPv4 address"))
                })?;
                Remote::Address(a.to_string())
            } else {
                let by_name = r.get("name").and_then(Value::as_str);
                let g = ident(r)
                    .and_then(|id| d.group(&id))
                    .or_else(|| {
                        by_name.and_then(|n| d.security_groups.iter().find(|g| g.name == n))
                    })
                    .ok_or_else(|| {
                        bad_rule(format!(
                            "remote {r}: no such security group (or give cidr_block or address)"
                        ))
                    })?;
                Remote::Group(g.id.clone())
            }
        }
    };
    Ok(Rule {
        id: String::new(),
        created_at: model::now(),
        direction,
        protocol,
        port_min,
        port_max,
        icmp_type,
        code,
        remote,
    })
}

// ---- views ----

fn crn(kind: &str, id: &str) -> String {
    format!("crn:v1:iqd:local:is:iqd-1:a/iqd::{kind}:{id}")
}

fn page(b: &str, path: &str, q: &[(String, String)], items: Vec<Value>) -> Res {
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let limit = match get("limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "validation_invalid_argument",
                    format!("limit {l:?}: 1-100"),
                )
            })?,
    };
    let start = match get("start") {
        None => 0,
        Some(s) => s.parse::<usize>().map_err(|_| {
            ApiError::new(
                400,
                "validation_invalid_argument",
                format!("start {s:?} is not a token this server gave"),
            )
        })?,
    };
    let total = items.len();
    let shown: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    let mut body = json!({
        "first": { "href": format!("{b}/{path}?limit={limit}") },
        "limit": limit,
        "total_count": total,
    });
    if start + limit < total {
        body["next"] =
            json!({ "href": format!("{b}/{path}?limit={limit}&start={}", start + limit) });
    }
    body[path] = Value::Array(shown);
    Ok((200, body))
}

fn vpc_ref(b: &str, v: &Vpc) -> Value {
    json!({ "id": v.id, "href": format!("{b}/vpcs/{}", v.id), "crn": crn("vpc", &v.id), "name": v.name, "resource_type": "vpc" })
}

fn zone(b: &str) -> Value {
    json!({ "name": "iqd-1", "href": format!("{b}/regions/iqd/zones/iqd-1") })
}

fn resource_group() -> Value {
    json!({ "id": "iqd", "href": "iqd:resource_groups/iqd", "name": "iqd" })
}

fn group_ref(b: &str, g: &Group) -> Value {
    json!({ "id": g.id, "href": format!("{b}/security_groups/{}", g.id), "crn": crn("security-group", &g.id), "name": g.name })
}

fn vpc_view(b: &str, d: &Doc, v: &Vpc) -> Value {
    let mut view = vpc_ref(b, v);
    view["created_at"] = json!(v.created_at);
    view["status"] = json!("available");
    view["classic_access"] = json!(false);
    view["cse_source_ips"] = json!([]);
    view["resource_group"] = resource_group();
    view["health_state"] = json!("ok");
    if let Some(g) = d.group(&v.default_security_group) {
        view["default_security_group"] = group_ref(b, g);
    }
    view
}

fn subnet_ref(b: &str, s: &Subnet) -> Value {
    json!({ "id": s.id, "href": format!("{b}/subnets/{}", s.id), "crn": crn("subnet", &s.id), "name": s.name, "resource_type": "subnet" })
}

fn subnet_view(b: &str, d: &Doc, s: &Subnet) -> Value {
    let total = 1u64 << (32 - s.prefix);
    let used = d
        .servers
        .iter()
        .flat_map(|x| x.interfaces.iter())
        .filter(|i| i.subnet == s.id)
        .count() as u64;
    let mut view = subnet_ref(b, s);
    view["created_at"] = json!(s.created_at);
    view["ipv4_cidr_block"] = json!(format!("{}/{}", s.network, s.prefix));
    view["ip_version"] = json!("ipv4");
    view["status"] = json!("available");
    view["total_ipv4_address_count"] = json!(total);
    view["available_ipv4_address_count"] = json!(total.saturating_sub(5 + used));
    view["zone"] = zone(b);
    view["resource_group"] = resource_group();
    if let Some(v) = &d.vpc {
        view["vpc"] = vpc_ref(b, v);
    }
    view["chpid"] = json!(format!("{:02X}", s.chpid));
    view["mfs"] = json!(s.mfs);
    view
}

fn profile_view(b: &str, p: &crate::domain::Profile) -> Value {
    json!({
        "name": p.name,
        "href": format!("{b}/bare_metal_server/profiles/{}", p.name),
        "family": "linuxonez",
        "resource_type": "bare_metal_server_profile",
        "cpu_architecture": { "type": "fixed", "value": "s390x" },
        "network_interface_count": { "type": "range", "min": 1, "max": p.interfaces },
        "bandwidth": { "type": "fixed", "value": p.bandwidth.bits_per_second() / 1_000_000 },
    })
}

fn nic_ref(b: &str, s: &Server, i: &Interface) -> Value {
    json!({
        "id": i.id,
        "href": format!("{b}/bare_metal_servers/{}/network_interfaces/{}", s.id, i.id),
        "name": i.name,
        "resource_type": "network_interface",
        "primary_ip": { "address": i.address.to_string(), "resource_type": "subnet_reserved_ip" },
    })
}

fn server_view(b: &str, d: &Doc, s: &Server) -> Value {
    let nics: Vec<Value> = s.interfaces.iter().map(|i| nic_ref(b, s, i)).collect();
    let mut view = json!({
        "id": s.id,
        "href": format!("{b}/bare_metal_servers/{}", s.id),
        "crn": crn("bare-metal-server", &s.id),
        "name": s.name,
        "created_at": s.created_at,
        "resource_type": "bare_metal_server",
        "status": s.status,
        "lifecycle_state": "stable",
        "profile": { "name": s.profile, "href": format!("{b}/bare_metal_server/profiles/{}", s.profile) },
        "network_interfaces": nics,
        "zone": zone(b),
        "resource_group": resource_group(),
        "cpu": { "architecture": "s390x" },
        "lpar": s.lpar,
        "netns": s.netns,
    });
    if let Some(primary) = s.interfaces.first() {
        view["primary_network_interface"] = nic_ref(b, s, primary);
    }
    if let Some(v) = &d.vpc {
        view["vpc"] = vpc_ref(b, v);
    }
    view
}

fn nic_view(b: &str, d: &Doc, s: &Server, i: &Interface) -> Value {
    let mut view = nic_ref(b, s, i);
    view["created_at"] = json!(i.created_at);
    view["interface_type"] = json!("hipersocket");
    view["allow_ip_spoofing"] = json!(i.allow_ip_spoofing);
    view["enable_infrastructure_nat"] = json!(true);
    view["status"] = json!("available");
    view["type"] = json!(if s.interfaces.first().is_some_and(|p| p.id == i.id) {
        "primary"
    } else {
        "secondary"
    });
    view["security_groups"] = Value::Array(
        i.security_groups
            .iter()
            .filter_map(|g| d.group(g))
            .map(|g| group_ref(b, g))
            .collect(),
    );
    view["ifname"] = json!(i.ifname);
    view["port_speed"] = json!(0);
    if let Some(sub) = d.subnet(&i.subnet) {
        view["subnet"] = subnet_ref(b, sub);
        view["chpid"] = json!(format!("{:02X}", sub.chpid));
    }
    view
}

fn target_view(b: &str, s: &Server, i: &Interface) -> Value {
    nic_ref(b, s, i)
}

fn targets(b: &str, d: &Doc, id: &str) -> Vec<Value> {
    d.servers
        .iter()
        .flat_map(|s| s.interfaces.iter().map(move |i| (s, i)))
        .filter(|(_, i)| i.security_groups.iter().any(|g| g == id))
        .map(|(s, i)| target_view(b, s, i))
        .collect()
}

fn rule_view(b: &str, d: &Doc, g: &Group, r: &Rule) -> Value {
    let mut view = json!({
        "id": r.id,
        "href": format!("{b}/security_groups/{}/rules/{}", g.id, r.id),
        "direction": r.direction,
        "protocol": r.protocol,
        "ip_version": "ipv4",
    });
    view["remote"] = match &r.remote {
        Remote::Any => json!({ "cidr_block": "0.0.0.0/0" }),
        Remote::CidrBlock(c) => json!({ "cidr_block": c }),
        Remote::Address(a) => json!({ "address": a }),
        Remote::Group(id) => d
            .group(id)
            .map(|g| group_ref(b, g))
            .unwrap_or(json!({ "id": id })),
    };
    if r.protocol == "tcp" || r.protocol == "udp" {
        view["port_min"] = json!(r.port_min.unwrap_or(1));
        view["port_max"] = json!(r.port_max.unwrap_or(65535));
    }
    if let Some(t) = r.icmp_type {
        view["type"] = json!(t);
    }
    if let Some(c) = r.code {
        view["code"] = json!(c);
    }
    view
}

fn group_view(b: &str, d: &Doc, g: &Group) -> Value {
    let mut view = group_ref(b, g);
    view["created_at"] = json!(g.created_at);
    view["resource_type"] = json!("security_group");
    view["rules"] = Value::Array(g.rules.iter().map(|r| rule_view(b, d, g, r)).collect());
    view["targets"] = Value::Array(targets(b, d, &g.id));
    view["resource_group"] = resource_group();
    if let Some(v) = &d.vpc {
        view["vpc"] = vpc_ref(b, v);
    }
    view
}
