//! The route table and the OpenAPI document built from it. The router in
//! `api` is built from the same table, so a route cannot exist undocumented.

use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    User,
    Admin,
    Import,
}

#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Component schema of the JSON body, if any.
    pub body: Option<&'static str>,
    /// Component schema (or `text`) of the 200 response.
    pub response: &'static str,
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    body: Option<&'static str>,
    response: &'static str,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        summary,
        access,
        body,
        response,
    }
}

pub const ROUTES: &[RouteSpec] = &[
    r("GET", "/api/lookup/{system}/{type}/{tag}/", "Resolve a tag to its READY image record (404 when unknown or not ready, 403 when the ACL refuses the caller)", Access::User, None, "ImageRecord"),
    r("POST", "/api/pull/{system}/{type}/{tag}/", "Start a pull, or join the one running for this tag; returns the record with its status", Access::User, Some("PullRequest"), "ImageRecord"),
    r("GET", "/api/list/{system}/", "READY images the caller may use", Access::User, None, "ImageList"),
    r("POST", "/api/doimport/{system}/{type}/{tag}/", "Publish a site-built squashfs readable by the caller as custom:<tag> (import users only)", Access::Import, Some("ImportRequest"), "ImageRecord"),
    r("GET", "/api/expire/{system}/{type}/{tag}/", "Remove an image and its record (administrators)", Access::Admin, None, "ImageRecord"),
    r("GET", "/api/autoexpire/{system}/", "Remove images not pulled for expire_after_days, and old failed records (administrators)", Access::Admin, None, "ExpireResult"),
    r("GET", "/api/metrics/{system}/", "Image counts and sizes by status (administrators)", Access::Admin, None, "SystemMetrics"),
    r("GET", "/api/queue/{system}/", "Pulls queued or running that the caller may see (their ACL admits the caller; administrators see all)", Access::User, None, "Queue"),
    r("POST", "/api/login/{system}/", "Store the caller's credentials for a registry, used for the caller's later pulls from it", Access::User, Some("LoginRequest"), "LoginResult"),
    r("GET", "/healthz", "Liveness: the gateway and its store answer", Access::Public, None, "text"),
    r("GET", "/metrics", "Prometheus metrics", Access::Public, None, "text"),
    r("GET", "/openapi.json", "This document", Access::User, None, "object"),
];

/// `{name}` placeholders of a path, in order.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn param(name: &str) -> Value {
    let description = match name {
        "system" => "platform name configured under [systems.<name>]",
        "type" => "image type: docker or custom (lookup also accepts id)",
        "tag" => "the reference, URL-encoded, e.g. 127.0.0.1%3A5000%2Fbusybox%3Alatest",
        _ => "",
    };
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn schema_ref(name: &str) -> Value {
    match name {
        "text" => json!({"text/plain": {"schema": {"type": "string"}}}),
        "object" => json!({"application/json": {"schema": {"type": "object"}}}),
        other => {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{other}")}}})
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": schema_ref("ApiErrorBody")})
}

fn components() -> Value {
    let string_list = json!({"type": "array", "items": {"type": "string"}});
    let id_list = json!({"type": "array", "items": {"type": "integer"}});
    json!({
        "securitySchemes": {
            "munge": {"type": "apiKey", "in": "header", "name": "authentication",
                      "description": "a fresh munge credential whose payload is `shifter-imagegw v1 METHOD PATH?QUERY SHA256HEX(body)` for this very request (munge -s PAYLOAD); each is accepted once"}
        },
        "schemas": {
            "ImageRecord": {"type": "object", "properties": {
                "id": {"type": "string"}, "system": {"type": "string"}, "itype": {"type": "string"},
                "tag": string_list, "status": {"type": "string",
                    "enum": ["PENDING","PULLING","CONVERSION","TRANSFER","READY","FAILURE","EXPIRED"]},
                "status_message": {"type": "string"}, "userACL": id_list, "groupACL": id_list,
                "ENV": string_list, "ENTRY": string_list, "CMD": string_list,
                "WORKDIR": {"type": "string"}, "LABELS": {"type": "object", "additionalProperties": {"type": "string"}},
                "last_pull": {"type": "integer"}, "size": {"type": "integer"},
                "progress": {"type": "object", "properties": {
                    "bytes_downloaded": {"type": "integer"}, "bytes_total": {"type": "integer"},
                    "bytes_converted": {"type": "integer"}, "bytes_to_convert": {"type": "integer"}}}
            }},
            "ImageList": {"type": "object", "properties": {"list": {"type": "array", "items": {"$ref": "#/components/schemas/ImageRecord"}}}},
            "PullRequest": {"type": "object", "properties": {
                "allowed_uids": {"type": "string", "description": "comma-separated uids"},
                "allowed_gids": {"type": "string", "description": "comma-separated gids"}}},
            "ImportRequest": {"type": "object", "required": ["filepath"], "properties": {
                "filepath": {"type": "string"}, "format": {"type": "string", "default": "squashfs"},
                "allowed_uids": {"type": "string"}, "allowed_gids": {"type": "string"}}},
            "LoginRequest": {"type": "object", "required": ["registry", "username", "password"], "properties": {
                "registry": {"type": "string", "description": "host[:port]"},
                "username": {"type": "string"}, "password": {"type": "string", "format": "password"}}},
            "LoginResult": {"type": "object", "properties": {"result": {"type": "string"},
                "registry": {"type": "string"}, "username": {"type": "string"}}},
            "ExpireResult": {"type": "object", "properties": {"expired": string_list}},
            "SystemMetrics": {"type": "object"},
            "Queue": {"type": "object", "properties": {"queue": {"type": "array", "items": {"type": "object"}}}},
            "ApiErrorBody": {"type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}
        }
    })
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for spec in ROUTES {
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({"description": "success", "content": schema_ref(spec.response)}),
        );
        if spec.path.contains("{tag}") || spec.path.contains("{system}") {
            responses.insert("400".into(), error_response("bad reference or body"));
            responses.insert("404".into(), error_response("unknown system or image"));
        }
        if spec.access != Access::Public {
            responses.insert(
                "401".into(),
                error_response("missing, bad, expired or replayed credential"),
            );
            responses.insert(
                "403".into(),
                error_response("the caller lacks the right or fails the image ACL"),
            );
        }
        if spec.method == "POST" && spec.path.starts_with("/api/pull") {
            responses.insert("503".into(), error_response("too many pulls queued"));
        }
        let mut op = json!({
            "summary": spec.summary,
            "operationId": format!("{} {}", spec.method, spec.path),
            "parameters": path_params(spec.path).into_iter().map(param).collect::<Vec<_>>(),
            "responses": responses,
        });
        if spec.access != Access::Public {
            op["security"] = json!([{"munge": []}]);
        }
        if let Some(body) = spec.body {
            op["requestBody"] = json!({"required": false, "content": schema_ref(body)});
        }
        let entry = paths
            .entry(spec.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[spec.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "shifter-rs image gateway", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": components(),
    })
}
