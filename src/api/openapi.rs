//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, made from the
//! same route table that mounts the API ([`super::routes`]).

use actix_web::HttpResponse;
use serde_json::{Map, Value, json};

/// The document.
pub fn build() -> Value {
    let mut paths = Map::new();
    for route in super::routes() {
        let path = format!("/api/v1{}", route.path);
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .chain(route.query.iter().map(|(name, kind)| {
                json!({ "name": name, "in": "query", "required": false,
                        "schema": { "type": if *kind == "integer" { "integer" } else { "string" } },
                        "description": kind })
            }))
            .collect();
        let mut op = json!({
            "summary": route.summary,
            "operationId": format!("{} {}", route.method.to_lowercase(), route.path),
            "parameters": params,
            "responses": {
                route.ok.to_string(): { "description": "success" },
                "default": { "description": "an error", "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Error" } } } },
            },
            "x-min-role": route.role.map(|r| r.as_str()),
        });
        if route.role.is_some() {
            op["security"] = json!([{ "bearer": [] }, { "cookie": [] }]);
        } else {
            op["security"] = json!([]);
        }
        if !route.body.is_empty() {
            let binary = route.body.iter().any(|(_, kind, _)| *kind == "binary");
            let properties: Map<String, Value> = route
                .body
                .iter()
                .map(|(name, kind, _)| {
                    let schema = match *kind {
                        "binary" => json!({ "type": "string", "format": "binary" }),
                        "integer" | "boolean" | "string" => json!({ "type": kind }),
                        other => json!({ "type": "object", "description": other }),
                    };
                    ((*name).to_owned(), schema)
                })
                .collect();
            let required: Vec<&str> = route
                .body
                .iter()
                .filter(|(_, _, required)| *required)
                .map(|(name, _, _)| *name)
                .collect();
            let media = if binary {
                "multipart/form-data"
            } else {
                "application/json"
            };
            op["requestBody"] = json!({
                "required": true,
                "content": { media: { "schema": {
                    "type": "object", "properties": properties, "required": required,
                } } },
            });
        }
        let entry = paths
            .entry(path)
            .or_insert_with(|| Value::Object(Map::new()));
        entry[route.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Frontdesk API",
            "version": "1",
            "description": "Bots, channels, knowledge, conversations, users and audit of one workspace. Realtime events: GET /ws/agent.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "cookie": { "type": "apiKey", "in": "cookie", "name": crate::auth::SESSION_COOKIE },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message", "details"],
                        "properties": {
                            "code": { "type": "string" },
                            "message": { "type": "string" },
                            "details": {},
                        },
                    } },
                },
            },
        },
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(build())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented_once_with_its_parameters() {
        let doc = super::build();
        let routes = super::super::routes();
        let mut seen = std::collections::HashSet::new();
        for route in &routes {
            assert!(
                seen.insert((route.method, route.path)),
                "{} {} twice",
                route.method,
                route.path
            );
            let op = &doc["paths"][format!("/api/v1{}", route.path)][route.method.to_lowercase()];
            assert_eq!(op["summary"], route.summary);
            let params = op["parameters"].as_array().expect("parameters");
            for part in route.path.split('/').filter(|p| p.starts_with('{')) {
                let name = part.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    params.iter().any(|p| p["name"] == name),
                    "{name} of {}",
                    route.path
                );
            }
        }
        assert!(doc["paths"]["/api/v1/conversations/{id}/take_over"]["post"].is_object());
    }
}
