//! OpenAPI 3 documents (JSON or YAML) into [`Operation`]s. Every error names the JSON
//! pointer (RFC 6901) of the problem.

use std::path::Path;

use http::Method;
use serde_json::{Map, Value};

use crate::error::AuditError;
use crate::operation::{Operation, ParamKind, PathParam, template_params};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Read the operations of a document's text; `path` names the file in errors.
///
/// # Errors
/// [`AuditError::Syntax`] when the text is neither JSON nor YAML, [`AuditError::Invalid`]
/// with the pointer of the first problem otherwise.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Operation>, AuditError> {
    let doc = parse_value(text, path)?;
    Reader { doc: &doc, path }.operations()
}

/// JSON when the text starts like JSON, YAML otherwise.
pub(crate) fn parse_value(text: &str, path: &Path) -> Result<Value, AuditError> {
    let syntax = |format: &'static str, message: String| AuditError::Syntax {
        path: path.to_owned(),
        format,
        message,
    };
    if text.trim_start().starts_with(['{', '[']) {
        serde_json::from_str(text).map_err(|e| syntax("JSON", e.to_string()))
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| syntax("YAML", e.to_string()))
    }
}

/// RFC 6901: `~` is `~0`, `/` is `~1`.
#[must_use]
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

struct Reader<'a> {
    doc: &'a Value,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn invalid(&self, pointer: &str, message: impl Into<String>) -> AuditError {
        AuditError::Invalid {
            path: self.path.to_owned(),
            pointer: if pointer.is_empty() {
                "/".to_owned()
            } else {
                pointer.to_owned()
            },
            message: message.into(),
        }
    }

    fn object(
        &self,
        value: &'a Value,
        pointer: &str,
    ) -> Result<&'a Map<String, Value>, AuditError> {
        value.as_object().ok_or_else(|| {
            self.invalid(
                pointer,
                format!("expected an object, found {}", kind(value)),
            )
        })
    }

    fn array(&self, value: &'a Value, pointer: &str) -> Result<&'a Vec<Value>, AuditError> {
        value.as_array().ok_or_else(|| {
            self.invalid(pointer, format!("expected an array, found {}", kind(value)))
        })
    }

    /// Follow a local `$ref`, once or along a chain; returns the value and its pointer.
    fn resolve(&self, value: &'a Value, pointer: &str) -> Result<(&'a Value, String), AuditError> {
        let mut value = value;
        let mut pointer = pointer.to_owned();
        for _ in 0..16 {
            let Some(reference) = value.get("$ref") else {
                return Ok((value, pointer));
            };
            let at = format!("{pointer}/$ref");
            let Some(target) = reference.as_str() else {
                return Err(self.invalid(&at, "`$ref` must be a string"));
            };
            let Some(local) = target.strip_prefix('#') else {
                return Err(self.invalid(
                    &at,
                    format!("`{target}`: only references inside the document (`#/…`) are followed"),
                ));
            };
            value = self
                .doc
                .pointer(local)
                .ok_or_else(|| self.invalid(&at, format!("`{target}` does not resolve")))?;
            pointer = local.to_owned();
        }
        Err(self.invalid(&pointer, "`$ref` chain longer than 16"))
    }

    fn operations(&self) -> Result<Vec<Operation>, AuditError> {
        let root = self.object(self.doc, "")?;
        match root.get("openapi") {
            Some(Value::String(v)) if v.starts_with("3.") => {}
            Some(Value::String(v)) => {
                return Err(self.invalid(
                    "/openapi",
                    format!("version `{v}`: only OpenAPI 3.x is read"),
                ));
            }
            Some(other) => {
                return Err(self.invalid(
                    "/openapi",
                    format!("expected a version string, found {}", kind(other)),
                ));
            }
            None if root.contains_key("swagger") => {
                return Err(
                    self.invalid("/swagger", "a Swagger 2 document: convert it to OpenAPI 3")
                );
            }
            None => return Err(self.invalid("/openapi", "missing: not an OpenAPI 3 document")),
        }
        let global_security = match root.get("security") {
            Some(s) => Some(self.security(s, "/security")?),
            None => None,
        };
        let paths = root
            .get("paths")
            .ok_or_else(|| self.invalid("/paths", "missing"))?;
        // Paths in key order whatever the JSON map keeps (serde_json keeps insertion order
        // when any crate of the build enables `preserve_order`).
        let mut paths: Vec<_> = self.object(paths, "/paths")?.iter().collect();
        paths.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::new();
        for (template, item) in paths {
            let item_ptr = format!("/paths/{}", escape(template));
            if !template.starts_with('/') {
                return Err(self.invalid(
                    &item_ptr,
                    format!("the path `{template}` does not start with `/`"),
                ));
            }
            let (item, item_ptr) = self.resolve(item, &item_ptr)?;
            let item = self.object(item, &item_ptr)?;
            let shared = match item.get("parameters") {
                Some(p) => self.parameters(p, &format!("{item_ptr}/parameters"))?,
                None => Vec::new(),
            };
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let op_ptr = format!("{item_ptr}/{method}");
                let op_obj = self.object(op, &op_ptr)?;
                out.push(self.operation(
                    template,
                    method,
                    op_obj,
                    &op_ptr,
                    &shared,
                    global_security,
                )?);
            }
        }
        Ok(out)
    }

    fn operation(
        &self,
        template: &str,
        method: &str,
        op: &'a Map<String, Value>,
        op_ptr: &str,
        shared: &[Param],
        global_security: Option<bool>,
    ) -> Result<Operation, AuditError> {
        let method_upper = method.to_ascii_uppercase();
        let id = match op.get("operationId") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::String(_)) | None => format!("{method_upper} {template}"),
            Some(other) => {
                return Err(self.invalid(
                    &format!("{op_ptr}/operationId"),
                    format!("expected a string, found {}", kind(other)),
                ));
            }
        };
        let mut params: Vec<Param> = shared.to_vec();
        if let Some(p) = op.get("parameters") {
            for param in self.parameters(p, &format!("{op_ptr}/parameters"))? {
                params.retain(|q| !(q.name == param.name && q.location == param.location));
                params.push(param);
            }
        }
        let names = template_params(template);
        let mut path_params = Vec::new();
        for name in &names {
            let declared = params
                .iter()
                .find(|p| p.location == "path" && &p.name == name);
            path_params.push(PathParam {
                name: name.clone(),
                example: declared.and_then(|p| p.example.clone()),
                kind: declared.map_or(ParamKind::Text, |p| p.kind),
            });
        }
        if let Some(stray) = params
            .iter()
            .find(|p| p.location == "path" && !names.contains(&p.name))
        {
            return Err(self.invalid(
                &stray.pointer,
                format!(
                    "path parameter `{}` is not in the path `{template}`",
                    stray.name
                ),
            ));
        }
        let query: Vec<String> = params
            .iter()
            .filter(|p| p.location == "query" && p.required)
            .map(|p| {
                format!(
                    "{}={}",
                    p.name,
                    p.example.clone().unwrap_or_else(|| "1".to_owned())
                )
            })
            .collect();
        let requires_auth = match op.get("security") {
            Some(s) => self.security(s, &format!("{op_ptr}/security"))?,
            None => global_security.unwrap_or(false),
        };
        let body = match op.get("requestBody") {
            Some(b) => Some(self.body(b, &format!("{op_ptr}/requestBody"))?),
            None => None,
        };
        let method = Method::from_bytes(method_upper.as_bytes())
            .map_err(|_| self.invalid(op_ptr, "not a method"))?;
        Ok(Operation {
            id,
            method,
            path: template.to_owned(),
            params: path_params,
            query: (!query.is_empty()).then(|| query.join("&")),
            headers: Vec::new(),
            body,
            requires_auth: Some(requires_auth),
            url: None,
        })
    }

    /// Whether a security requirement list requires authentication: not empty, and no
    /// empty requirement (`{}` means anonymous is allowed).
    fn security(&self, value: &'a Value, pointer: &str) -> Result<bool, AuditError> {
        let list = self.array(value, pointer)?;
        let mut required = !list.is_empty();
        for (i, req) in list.iter().enumerate() {
            let req = self.object(req, &format!("{pointer}/{i}"))?;
            if req.is_empty() {
                required = false;
            }
        }
        Ok(required)
    }

    fn parameters(&self, value: &'a Value, pointer: &str) -> Result<Vec<Param>, AuditError> {
        let list = self.array(value, pointer)?;
        let mut out = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let (p, ptr) = self.resolve(p, &format!("{pointer}/{i}"))?;
            let obj = self.object(p, &ptr)?;
            let name = match obj.get("name") {
                Some(Value::String(n)) if !n.is_empty() => n.clone(),
                Some(_) => {
                    return Err(self.invalid(&format!("{ptr}/name"), "expected a non-empty string"));
                }
                None => return Err(self.invalid(&format!("{ptr}/name"), "missing")),
            };
            let location = match obj.get("in") {
                Some(Value::String(l))
                    if ["query", "header", "path", "cookie"].contains(&l.as_str()) =>
                {
                    l.clone()
                }
                Some(other) => {
                    return Err(self.invalid(
                        &format!("{ptr}/in"),
                        format!("expected query, header, path or cookie, found {other}"),
                    ));
                }
                None => return Err(self.invalid(&format!("{ptr}/in"), "missing")),
            };
            let schema = match obj.get("schema") {
                Some(s) => Some(self.resolve(s, &format!("{ptr}/schema"))?.0),
                None => None,
            };
            let example = obj
                .get("example")
                .or_else(|| schema.and_then(|s| s.get("example")))
                .or_else(|| schema.and_then(|s| s.get("default")))
                .or_else(|| {
                    obj.get("examples")
                        .and_then(Value::as_object)
                        .and_then(|e| e.values().next())
                        .and_then(|e| e.get("value"))
                })
                .and_then(scalar);
            let kind = match schema.and_then(|s| s.get("type")).and_then(Value::as_str) {
                Some("integer" | "number") => ParamKind::Number,
                _ if schema.and_then(|s| s.get("format")).and_then(Value::as_str)
                    == Some("uuid") =>
                {
                    ParamKind::Uuid
                }
                _ => ParamKind::Text,
            };
            let required = obj
                .get("required")
                .and_then(Value::as_bool)
                .unwrap_or(location == "path");
            out.push(Param {
                name,
                location,
                example,
                kind,
                required,
                pointer: ptr,
            });
        }
        Ok(out)
    }

    fn body(&self, value: &'a Value, pointer: &str) -> Result<(String, Vec<u8>), AuditError> {
        let (value, ptr) = self.resolve(value, pointer)?;
        let obj = self.object(value, &ptr)?;
        let json = obj.get("content").and_then(|c| c.get("application/json"));
        let example = json.and_then(|j| {
            j.get("example")
                .or_else(|| j.get("schema").and_then(|s| s.get("example")))
        });
        let bytes = match example {
            Some(e) => serde_json::to_vec(e).unwrap_or_else(|_| b"{}".to_vec()),
            None => b"{}".to_vec(),
        };
        Ok(("application/json".to_owned(), bytes))
    }
}

#[derive(Debug, Clone)]
struct Param {
    name: String,
    location: String,
    example: Option<String>,
    kind: ParamKind,
    required: bool,
    pointer: String,
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn err(text: &str) -> String {
        parse(text, Path::new("api.json")).unwrap_err().to_string()
    }

    #[test]
    fn operations_security_and_params() {
        let doc = r##"{"openapi":"3.0.3","security":[{"bearer":[]}],
          "components":{"parameters":{"Id":{"name":"id","in":"path","required":true,"schema":{"type":"integer","example":7}}}},
          "paths":{
            "/public":{"get":{"security":[],"responses":{}}},
            "/files/{id}":{"parameters":[{"$ref":"#/components/parameters/Id"}],
               "get":{"operationId":"getFile","responses":{}},
               "delete":{"security":[{},{"bearer":[]}]}}}}"##;
        let ops = parse(doc, Path::new("api.json")).unwrap();
        assert_eq!(ops.len(), 3);
        // Paths in key order, methods in the order of the specification.
        assert_eq!(ops[0].id, "getFile");
        assert_eq!(
            ops[0].requires_auth,
            Some(true),
            "the global security applies"
        );
        assert_eq!(ops[0].params[0].example.as_deref(), Some("7"));
        assert_eq!(ops[0].params[0].kind, ParamKind::Number);
        assert_eq!(ops[1].id, "DELETE /files/{id}");
        assert_eq!(ops[1].requires_auth, Some(false), "{{}} allows anonymous");
        assert_eq!(
            (ops[2].id.as_str(), ops[2].requires_auth),
            ("GET /public", Some(false))
        );
        let yaml = "openapi: 3.1.0\npaths:\n  /a:\n    get: {}\n";
        assert_eq!(parse(yaml, Path::new("api.yaml")).unwrap()[0].id, "GET /a");
    }

    #[test]
    fn errors_name_the_pointer() {
        assert_eq!(
            err(r#"{"paths":{}}"#),
            "api.json: at /openapi: missing: not an OpenAPI 3 document"
        );
        assert_eq!(
            err(r#"{"openapi":"3.0.0"}"#),
            "api.json: at /paths: missing"
        );
        assert_eq!(
            err(
                r#"{"openapi":"3.0.0","paths":{"/a/{id}":{"get":{"parameters":[{"name":"id"}]}}}}"#
            ),
            "api.json: at /paths/~1a~1{id}/get/parameters/0/in: missing"
        );
        assert_eq!(
            err(
                r##"{"openapi":"3.0.0","paths":{"/a":{"get":{"parameters":[{"$ref":"#/components/parameters/Nope"}]}}}}"##
            ),
            "api.json: at /paths/~1a/get/parameters/0/$ref: `#/components/parameters/Nope` does not resolve"
        );
        assert_eq!(
            err(r#"{"openapi":"3.0.0","paths":{"/a":{"get":{"security":{}}}}}"#),
            "api.json: at /paths/~1a/get/security: expected an array, found an object"
        );
        assert!(err("{not json").starts_with("api.json: not JSON: "));
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z{}/#$~.]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z$/{}]{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any value anywhere in a document is an error with a pointer or operations,
        /// never a panic.
        #[test]
        fn any_value_at_any_place_never_panics(
            value in any_json(),
            place in 0usize..9,
        ) {
            let mut doc: Value = serde_json::from_str(
                r##"{"openapi":"3.0.3","security":[{"b":[]}],
                "components":{"parameters":{"Id":{"name":"id","in":"path"}}},
                "paths":{"/a/{id}":{"parameters":[{"$ref":"#/components/parameters/Id"}],
                "get":{"operationId":"x","parameters":[{"name":"q","in":"query","required":true}],
                "requestBody":{"content":{"application/json":{"example":{}}}}}}}}"##,
            ).unwrap();
            let pointers = [
                "/openapi", "/security", "/paths", "/paths/~1a~1{id}",
                "/paths/~1a~1{id}/get", "/paths/~1a~1{id}/parameters/0",
                "/components/parameters/Id", "/paths/~1a~1{id}/get/parameters/0/in",
                "/paths/~1a~1{id}/get/requestBody",
            ];
            if let Some(slot) = doc.pointer_mut(pointers[place]) {
                *slot = value;
            }
            match parse(&doc.to_string(), Path::new("api.json")) {
                Ok(_) | Err(AuditError::Invalid { .. }) => {}
                Err(e) => proptest::prop_assert!(false, "{e}"),
            }
        }
    }
}
