//! Routes: a method and a path template (`/docs/{id}`) lead to an upstream and the
//! requirements a request must meet.

use std::sync::Arc;

use http::Method;

use crate::auth::Source;
use crate::decision::Verbosity;

/// A checked route.
#[derive(Debug)]
pub struct Route {
    /// The route's name (its path template when unnamed).
    pub name: Arc<str>,
    /// The path template.
    pub template: String,
    /// The methods it accepts (`HEAD` is accepted wherever `GET` is).
    pub methods: Vec<Method>,
    /// The upstream it forwards to.
    pub upstream: Arc<str>,
    /// The identity sources it accepts; empty means public.
    pub(crate) sources: Vec<Arc<Source>>,
    /// Roles any one of which is enough; empty means any identity.
    pub roles: Vec<String>,
    /// Scopes that are all required.
    pub scopes: Vec<String>,
    /// Whether refusals must look like an unknown path.
    pub concealed: bool,
    /// How much refusals may say.
    pub verbosity: Verbosity,
    /// The Cedar action and resource the route stands for.
    pub(crate) target: crate::authz::RouteTarget,
    /// Network rules for this route, after the global ones.
    pub(crate) network: Option<crate::network::IpRules>,
    /// Body limit, WAF mode, CSRF and CORS for this route.
    pub hygiene: crate::hygiene::RouteHygiene,
}

impl Route {
    /// Whether the route needs an authenticated caller.
    #[must_use]
    pub fn authenticates(&self) -> bool {
        !self.sources.is_empty()
    }

    /// The names of the identity sources it accepts.
    pub fn source_names(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(|s| s.name().as_ref())
    }

    fn accepts(&self, method: &Method) -> bool {
        self.methods.contains(method)
            || (method == Method::HEAD && self.methods.contains(&Method::GET))
    }
}

/// The routes at one path: found once per request, then asked by method as often as
/// needed (a CORS preflight asks for the method it announces, and for the path's methods).
#[derive(Debug)]
pub(crate) struct PathMatch<'a> {
    routes: Vec<&'a Route>,
    params: Vec<(String, String)>,
}

/// What a path offers a method.
#[derive(Debug)]
pub(crate) enum MethodMatch<'a> {
    /// The route for this method.
    Found(&'a Route),
    /// The path exists with other methods.
    WrongMethod {
        allow: Vec<Method>,
        /// Every route at the path is concealed: answer as if the path did not exist.
        concealed: bool,
    },
}

impl<'a> PathMatch<'a> {
    /// The route for `method`, or the methods the path accepts.
    pub fn method(&self, method: &Method) -> MethodMatch<'a> {
        match self.routes.iter().find(|r| r.accepts(method)) {
            Some(route) => MethodMatch::Found(route),
            None => MethodMatch::WrongMethod {
                allow: self.allow(),
                concealed: self.routes.iter().all(|r| r.concealed),
            },
        }
    }

    /// Every method of every route at the path, as a 405 lists them (`HEAD` wherever `GET`).
    pub fn allow(&self) -> Vec<Method> {
        let mut allow = Vec::new();
        for route in &self.routes {
            for m in &route.methods {
                if !allow.contains(m) {
                    allow.push(m.clone());
                }
            }
            if route.methods.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
                allow.push(Method::HEAD);
            }
        }
        allow
    }

    /// The path parameters, by name.
    pub fn into_params(self) -> Vec<(String, String)> {
        self.params
    }
}

/// Method and path to route, built once per configuration.
#[derive(Debug)]
pub(crate) struct Router {
    paths: matchit::Router<Vec<usize>>,
    routes: Vec<Route>,
}

impl Router {
    /// Build the router. Errors carry the index of the route at fault.
    pub fn new(routes: Vec<Route>) -> Result<Self, (usize, String)> {
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            match groups.iter_mut().find(|(t, _)| *t == route.template) {
                Some((_, members)) => {
                    for &other in members.iter() {
                        if let Some(o) = routes.get(other)
                            && let Some(m) = route.methods.iter().find(|m| o.methods.contains(m))
                        {
                            return Err((
                                i,
                                format!("{m} {} is already routed by `{}`", route.template, o.name),
                            ));
                        }
                    }
                    members.push(i);
                }
                None => groups.push((route.template.clone(), vec![i])),
            }
        }
        let mut paths = matchit::Router::new();
        for (template, members) in groups {
            let first = members.first().copied().unwrap_or(0);
            paths
                .insert(template, members)
                .map_err(|e| (first, format!("path template conflicts: {e}")))?;
        }
        Ok(Self { paths, routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The routes at a normalized path, `None` when no route has it.
    pub fn lookup(&self, path: &str) -> Option<PathMatch<'_>> {
        let matched = self.paths.at(path).ok()?;
        Some(PathMatch {
            routes: matched
                .value
                .iter()
                .filter_map(|i| self.routes.get(*i))
                .collect(),
            params: matched
                .params
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
    }
}
