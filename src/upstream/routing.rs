//! Route table: (path, model) → upstream index, optional model rewrite and the ordered fallback chain;
//! egress control through each upstream's `models` allow-list. Built and validated once per config
//! (unknown names and fallback cycles are errors with key paths); `route` allocates only for a rewrite.

use std::collections::HashMap;

use super::config::{ConfigError, RouteConfig, UpstreamConfig};
use super::glob::Glob;

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTarget {
    /// Index into the upstream list (`UpstreamSet::get`).
    pub upstream: usize,
    /// Model to write into the request body before forwarding.
    pub model_rewrite: Option<String>,
    /// Ordered fallback chain to try while `upstream`'s breaker is open (only upstreams whose `models`
    /// allow the effective model).
    pub fallbacks: Vec<usize>,
    /// Index of the matching entry in `routes`, `None` for the implicit default route.
    pub route: Option<usize>,
}

/// Request refused by egress control (→ 403 with an OpenAI-shaped error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct EgressDenied {
    /// Human readable; may name the requested model, never credentials.
    pub reason: String,
}

impl EgressDenied {
    /// Error `code` for the OpenAI error body.
    pub const CODE: &'static str = "jimini_egress_denied";
}

#[derive(Debug)]
struct CompiledRoute {
    path: Option<Glob>,
    model: Option<Glob>,
    upstream: usize,
    rewrite: Option<String>,
}

/// Compiled route table. Precedence: routes in config order, first match wins (so put exact models
/// before globs). No match → the first upstream (implicit default). To deny everything unlisted, give
/// upstreams a `models` allow-list, or end `routes` with a catch-all to an upstream whose `models` is
/// restrictive.
#[derive(Debug)]
pub struct Router {
    routes: Vec<CompiledRoute>,
    default_upstream: usize,
    /// Per upstream: allowed models (empty = any).
    models: Vec<Vec<Glob>>,
    /// Per upstream: fallback chain (not including itself).
    chains: Vec<Vec<usize>>,
    names: Vec<String>,
}

/// Index upstream names; shared by `Router::new` and `UpstreamSet::new` so both report the same errors.
pub(crate) fn index_upstreams(
    upstreams: &[UpstreamConfig],
) -> Result<HashMap<&str, usize>, ConfigError> {
    if upstreams.is_empty() {
        return Err(ConfigError::new(
            "upstreams",
            "at least one upstream is required",
        ));
    }
    let mut by_name = HashMap::with_capacity(upstreams.len());
    for (i, u) in upstreams.iter().enumerate() {
        if u.name.trim().is_empty() {
            return Err(ConfigError::new(
                format!("upstreams[{i}].name"),
                "must not be empty",
            ));
        }
        if let Some(prev) = by_name.insert(u.name.as_str(), i) {
            return Err(ConfigError::new(
                format!("upstreams[{i}].name"),
                format!(
                    "duplicate upstream name '{}' (also upstreams[{prev}])",
                    u.name
                ),
            ));
        }
    }
    Ok(by_name)
}

fn unknown(path: String, name: &str, by_name: &HashMap<&str, usize>) -> ConfigError {
    let mut known: Vec<&str> = by_name.keys().copied().collect();
    known.sort_unstable();
    ConfigError::new(
        path,
        format!("unknown upstream '{name}' (known: {})", known.join(", ")),
    )
}

/// Follow `fallback` links for every upstream; reject unknown names and cycles.
pub(crate) fn fallback_chains(
    upstreams: &[UpstreamConfig],
    by_name: &HashMap<&str, usize>,
) -> Result<Vec<Vec<usize>>, ConfigError> {
    let mut next = Vec::with_capacity(upstreams.len());
    for (i, u) in upstreams.iter().enumerate() {
        next.push(match &u.fallback {
            None => None,
            Some(f) => Some(
                *by_name
                    .get(f.as_str())
                    .ok_or_else(|| unknown(format!("upstreams[{i}].fallback"), f, by_name))?,
            ),
        });
    }
    let mut chains = Vec::with_capacity(upstreams.len());
    for start in 0..upstreams.len() {
        let mut chain = Vec::new();
        let mut cur = next[start];
        while let Some(n) = cur {
            if n == start || chain.contains(&n) {
                let mut cycle: Vec<&str> = std::iter::once(start)
                    .chain(chain.iter().copied())
                    .map(|k| upstreams[k].name.as_str())
                    .collect();
                cycle.push(upstreams[n].name.as_str());
                return Err(ConfigError::new(
                    format!("upstreams[{start}].fallback"),
                    format!("fallback cycle: {}", cycle.join(" -> ")),
                ));
            }
            chain.push(n);
            cur = next[n];
        }
        chains.push(chain);
    }
    Ok(chains)
}

impl Router {
    pub fn new(
        routes: &[RouteConfig],
        upstreams: &[UpstreamConfig],
    ) -> Result<Router, ConfigError> {
        let by_name = index_upstreams(upstreams)?;
        let chains = fallback_chains(upstreams, &by_name)?;
        let mut compiled = Vec::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            let upstream = *by_name
                .get(r.upstream.as_str())
                .ok_or_else(|| unknown(format!("routes[{i}].upstream"), &r.upstream, &by_name))?;
            if let Some(p) = &r.path {
                if !p.starts_with('/') && !p.starts_with('*') {
                    return Err(ConfigError::new(
                        format!("routes[{i}].path"),
                        "must start with '/' (or a glob '*')",
                    ));
                }
            }
            if r.model.as_deref() == Some("") {
                return Err(ConfigError::new(
                    format!("routes[{i}].model"),
                    "must not be empty",
                ));
            }
            if let Some(m) = &r.rewrite_model {
                if m.is_empty() || m.contains(['*', '?']) {
                    return Err(ConfigError::new(
                        format!("routes[{i}].rewrite_model"),
                        "must be a concrete, non-empty model name",
                    ));
                }
            }
            compiled.push(CompiledRoute {
                path: r.path.as_deref().map(Glob::new),
                model: r.model.as_deref().map(Glob::new),
                upstream,
                rewrite: r.rewrite_model.clone(),
            });
        }
        let catch_all = compiled
            .iter()
            .find(|r| r.path.is_none() && r.model.is_none())
            .map(|r| r.upstream);
        Ok(Router {
            routes: compiled,
            default_upstream: catch_all.unwrap_or(0),
            models: upstreams
                .iter()
                .map(|u| u.models.iter().map(|m| Glob::new(m)).collect())
                .collect(),
            chains,
            names: upstreams.iter().map(|u| u.name.clone()).collect(),
        })
    }

    /// Upstream used when no route matches: the first route without conditions, else upstream 0.
    pub fn default_upstream(&self) -> usize {
        self.default_upstream
    }

    fn allows(&self, upstream: usize, model: Option<&str>) -> bool {
        match (model, self.models.get(upstream)) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(_), Some(list)) if list.is_empty() => true,
            (Some(m), Some(list)) => list.iter().any(|g| g.matches(m)),
        }
    }

    /// Route a request. `path` may include a query (ignored). `model` is the model named in the body.
    pub fn route(&self, path: &str, model: Option<&str>) -> Result<RouteTarget, EgressDenied> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let hit = self.routes.iter().enumerate().find(|(_, r)| {
            r.path.as_ref().is_none_or(|g| g.matches(path))
                && r.model
                    .as_ref()
                    .is_none_or(|g| model.is_some_and(|m| g.matches(m)))
        });
        let (route, upstream, rewrite) = match hit {
            Some((i, r)) => (Some(i), r.upstream, r.rewrite.as_deref()),
            None => (None, self.default_upstream, None),
        };
        let effective = rewrite.or(model);
        if !self.allows(upstream, effective) {
            let name = self.names.get(upstream).map_or("?", String::as_str);
            return Err(EgressDenied {
                reason: format!(
                    "model '{}' is not allowed on upstream '{name}'",
                    effective.unwrap_or_default()
                ),
            });
        }
        let fallbacks = self
            .chains
            .get(upstream)
            .map(|c| {
                c.iter()
                    .copied()
                    .filter(|&f| self.allows(f, effective))
                    .collect()
            })
            .unwrap_or_default();
        Ok(RouteTarget {
            upstream,
            model_rewrite: rewrite.map(str::to_string),
            fallbacks,
            route,
        })
    }

    /// Upstream indexes any request can reach (route targets, the default, and their fallbacks) —
    /// what readiness should look at.
    pub fn reachable_upstreams(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .routes
            .iter()
            .map(|r| r.upstream)
            .chain(std::iter::once(self.default_upstream))
            .collect();
        let chained: Vec<usize> = out
            .iter()
            .flat_map(|&u| self.chains.get(u).into_iter().flatten().copied())
            .collect();
        out.extend(chained);
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str, fallback: Option<&str>, models: &[&str]) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            base_url: "http://127.0.0.1:1".into(),
            fallback: fallback.map(String::from),
            models: models.iter().map(|s| s.to_string()).collect(),
            ..UpstreamConfig::default()
        }
    }

    fn route(
        path: Option<&str>,
        model: Option<&str>,
        upstream: &str,
        rewrite: Option<&str>,
    ) -> RouteConfig {
        RouteConfig {
            path: path.map(String::from),
            model: model.map(String::from),
            upstream: upstream.into(),
            rewrite_model: rewrite.map(String::from),
        }
    }

    fn table() -> Router {
        let ups = vec![
            up("openai", Some("azure"), &[]),
            up("azure", Some("backup"), &["gpt-4o*"]),
            up("backup", None, &[]),
            up("vllm", None, &["llama-*", "qwen*"]),
        ];
        let routes = vec![
            route(None, Some("gpt-4o-mini"), "azure", Some("gpt-4o-mini-2024")),
            route(None, Some("llama-*"), "vllm", None),
            route(Some("/v1/embeddings"), None, "backup", None),
            route(None, Some("gpt-*"), "openai", None),
            route(Some("/v1/chat/*"), Some("qwen*"), "vllm", None),
        ];
        Router::new(&routes, &ups).unwrap()
    }

    #[test]
    fn routing_table() {
        let r = table();
        let t = |p: &str, m: Option<&str>| r.route(p, m);
        // exact model first, with rewrite; fallbacks follow the chain and are filtered by models
        let x = t("/v1/chat/completions", Some("gpt-4o-mini")).unwrap();
        assert_eq!(
            (
                x.upstream,
                x.model_rewrite.as_deref(),
                x.fallbacks.clone(),
                x.route
            ),
            (1, Some("gpt-4o-mini-2024"), vec![2], Some(0))
        );
        // model glob
        assert_eq!(
            t("/v1/chat/completions", Some("llama-3-70b"))
                .unwrap()
                .upstream,
            3
        );
        // path route (model irrelevant) comes before the gpt-* route
        assert_eq!(t("/v1/embeddings", Some("gpt-x")).unwrap().upstream, 2);
        assert_eq!(t("/v1/embeddings?foo=1", None).unwrap().upstream, 2);
        // gpt-* → openai, fallback chain openai → azure → backup, azure kept only if it allows the model
        let x = t("/v1/chat/completions", Some("gpt-4o")).unwrap();
        assert_eq!((x.upstream, x.fallbacks.clone()), (0, vec![1, 2]));
        let x = t("/v1/chat/completions", Some("gpt-3.5-turbo")).unwrap();
        assert_eq!((x.upstream, x.fallbacks), (0, vec![2]));
        // path + model both required
        assert_eq!(
            t("/v1/chat/completions", Some("qwen2")).unwrap().upstream,
            3
        );
        // qwen on another path: no route → default (openai, allows any)
        let x = t("/v1/completions", Some("qwen2")).unwrap();
        assert_eq!((x.upstream, x.route), (0, None));
        // model condition never matches a request without a model
        assert_eq!(t("/v1/models", None).unwrap().upstream, 0);
    }

    #[test]
    fn egress_denied_by_allow_list() {
        let ups = vec![up("vllm", None, &["llama-*"]), up("openai", None, &[])];
        let routes = vec![route(None, Some("gpt-*"), "openai", None)];
        let r = Router::new(&routes, &ups).unwrap();
        assert_eq!(r.default_upstream(), 0);
        let e = r
            .route("/v1/chat/completions", Some("claude-3"))
            .unwrap_err();
        assert_eq!(
            e.reason,
            "model 'claude-3' is not allowed on upstream 'vllm'"
        );
        assert!(r.route("/v1/chat/completions", Some("llama-3")).is_ok());
        assert!(r.route("/v1/chat/completions", Some("gpt-4")).is_ok());
        // no model (e.g. GET /v1/models) is allowed
        assert!(r.route("/v1/models", None).is_ok());
        // the rewritten model is what is checked
        let routes = vec![
            route(None, Some("fast"), "vllm", Some("llama-3-8b")),
            route(None, Some("bad"), "vllm", Some("mistral")),
        ];
        let r = Router::new(&routes, &ups).unwrap();
        assert_eq!(
            r.route("/v1/chat/completions", Some("fast"))
                .unwrap()
                .model_rewrite
                .as_deref(),
            Some("llama-3-8b")
        );
        assert!(r.route("/v1/chat/completions", Some("bad")).is_err());
    }

    #[test]
    fn catch_all_route_is_default() {
        let ups = vec![up("a", None, &[]), up("b", None, &[])];
        let routes = vec![
            route(None, Some("x"), "a", None),
            route(None, None, "b", None),
        ];
        let r = Router::new(&routes, &ups).unwrap();
        assert_eq!(r.default_upstream(), 1);
        let x = r.route("/anything", Some("y")).unwrap();
        assert_eq!((x.upstream, x.route), (1, Some(1)));
        assert_eq!(r.reachable_upstreams(), vec![0, 1]);
    }

    #[test]
    fn empty_routes_send_everything_to_first_upstream() {
        let r = Router::new(&[], &[up("only", None, &[])]).unwrap();
        let x = r.route("/v1/chat/completions", Some("m")).unwrap();
        assert_eq!(
            (x.upstream, x.model_rewrite, x.fallbacks, x.route),
            (0, None, vec![], None)
        );
    }

    #[test]
    fn config_errors_name_key_paths() {
        let ups = vec![up("a", None, &[]), up("b", None, &[])];
        let routes = vec![
            route(None, None, "a", None),
            route(None, None, "b", None),
            route(None, None, "nope", None),
        ];
        let e = Router::new(&routes, &ups).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routes[2].upstream: unknown upstream 'nope' (known: a, b)"
        );

        let e = Router::new(&[], &[up("a", Some("zzz"), &[])]).unwrap_err();
        assert_eq!(e.path, "upstreams[0].fallback");

        let e = Router::new(
            &[],
            &[
                up("a", Some("b"), &[]),
                up("b", Some("c"), &[]),
                up("c", Some("a"), &[]),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "upstreams[0].fallback: fallback cycle: a -> b -> c -> a"
        );
        let e = Router::new(&[], &[up("a", Some("a"), &[])]).unwrap_err();
        assert!(e.message.contains("cycle"));

        let e = Router::new(&[], &[up("a", None, &[]), up("a", None, &[])]).unwrap_err();
        assert_eq!(e.path, "upstreams[1].name");
        assert_eq!(Router::new(&[], &[]).unwrap_err().path, "upstreams");

        let e = Router::new(
            &[route(Some("v1/x"), None, "a", None)],
            &[up("a", None, &[])],
        )
        .unwrap_err();
        assert_eq!(e.path, "routes[0].path");
        let e =
            Router::new(&[route(None, None, "a", Some("x*"))], &[up("a", None, &[])]).unwrap_err();
        assert_eq!(e.path, "routes[0].rewrite_model");
    }

    #[test]
    fn fallback_chain_tail_into_cycle_detected() {
        // a → b → c → b: cycle not involving the start
        let e = Router::new(
            &[],
            &[
                up("a", Some("b"), &[]),
                up("b", Some("c"), &[]),
                up("c", Some("b"), &[]),
            ],
        )
        .unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
    }
}
