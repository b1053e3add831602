//! `ftbudget serve`: the CLI's answers over HTTP, and one page that asks them. `GET /api/estimate`
//! (query parameters named as the CLI's flags without their dashes, `regime` repeated) and `POST
//! /api/estimate` (a JSON object with the same names) answer exactly what `ftbudget estimate
//! --format json` prints for the same settings, because both call [`answers::comparison`];
//! `/api/fit` answers `ftbudget fit --format json` the same way, `/api/regimes` lists every
//! registered regime with its options and `/api/presets` the model and GPU presets. `/` is the
//! page, embedded in the binary (no CDN, works offline). A bad request gets 400 and
//! `{"error": "<the CLI's one-line message>"}`, a body over [`BODY_LIMIT`] 413; a panic in a
//! handler becomes a 500 for that request only, and the server keeps serving. The server reads
//! no files and makes no network request: models are presets or a pasted `config.json`
//! (`config`), and a Hub id is refused with a message saying so.

pub mod answers;
pub mod request;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ftbudget_core::{ModelShape, Registry};
use ftbudget_sweep::GPU_PRESETS;
use request::{Params, fit_seq_to_model};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;
use tower_http::catch_panic::CatchPanicLayer;

/// The largest request body accepted (a config.json is a few KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The page: HTML with its CSS and JavaScript inline.
const PAGE: &str = include_str!("../assets/index.html");

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Registry(#[from] ftbudget_core::RegistryError),
    #[error("preset `{name}`: {source}")]
    Preset {
        name: String,
        source: ftbudget_models::ModelError,
    },
    #[error("--addr {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// What every request reads: the registry, the preset shapes, and the fixed answers.
struct Shared {
    registry: Registry,
    presets: HashMap<&'static str, ModelShape>,
    regimes_json: String,
    presets_json: String,
}

#[derive(Serialize)]
struct OptionJson {
    key: &'static str,
    values: &'static str,
    help: &'static str,
    default: &'static str,
}

#[derive(Serialize)]
struct RegimeJson {
    name: &'static str,
    summary: &'static str,
    rank_option: Option<&'static str>,
    options: Vec<OptionJson>,
}

#[derive(Serialize)]
struct ModelPresetJson {
    name: &'static str,
    total_params: u64,
}

#[derive(Serialize)]
struct GpuPresetJson {
    name: &'static str,
    bytes: u64,
}

#[derive(Serialize)]
struct PresetsJson {
    models: Vec<ModelPresetJson>,
    gpus: Vec<GpuPresetJson>,
    default_regimes: &'static [&'static str],
    default_fit_regimes: &'static [&'static str],
}

impl Shared {
    fn new() -> Result<Self, ServerError> {
        let registry = ftbudget_roster::registry()?;
        let mut presets = HashMap::new();
        let mut models = Vec::new();
        for name in ftbudget_models::presets::names() {
            let shape = ftbudget_models::load(name).map_err(|source| ServerError::Preset {
                name: name.to_string(),
                source,
            })?;
            models.push(ModelPresetJson {
                name,
                total_params: shape.total_params(),
            });
            presets.insert(name, shape);
        }
        let regimes: Vec<RegimeJson> = registry
            .registrations()
            .map(|r| RegimeJson {
                name: r.name,
                summary: r.summary,
                rank_option: r.rank_option,
                options: r
                    .options
                    .iter()
                    .map(|o| OptionJson {
                        key: o.key,
                        values: o.values,
                        help: o.help,
                        default: o.default,
                    })
                    .collect(),
            })
            .collect();
        let gpus = GPU_PRESETS
            .iter()
            .map(|g| GpuPresetJson {
                name: g.name,
                bytes: g.bytes(),
            })
            .collect();
        let presets_json = PresetsJson {
            models,
            gpus,
            default_regimes: answers::DEFAULT_REGIMES,
            default_fit_regimes: answers::DEFAULT_FIT_REGIMES,
        };
        Ok(Shared {
            registry,
            presets,
            regimes_json: to_json(&regimes),
            presets_json: to_json(&presets_json),
        })
    }

    /// `model` (a preset) or `config` (a config.json's text); never a file or the network.
    fn model(&self, params: &Params) -> Result<Cow<'_, ModelShape>, String> {
        if let Some(text) = params.get("config") {
            let name = params.get("model").unwrap_or("config.json");
            let read = ftbudget_models::config::read_config_json(text, name)
                .map_err(|e| format!("config: {}", answers::one_line(&e)))?;
            return read
                .spec
                .build()
                .map(Cow::Owned)
                .map_err(|e| format!("config: {}", answers::one_line(&e)));
        }
        let name = params.get("model").unwrap_or("minigpt");
        if let Some(shape) = self.presets.get(name) {
            return Ok(Cow::Borrowed(shape));
        }
        if ftbudget_hub::HubId::looks_like(name) {
            return Err(format!(
                "--model {name}: Hub ids are not served yet (the server makes no network request): \
                 paste the model's config.json, or run `ftbudget estimate --model {name}` in a terminal"
            ));
        }
        Err(format!(
            "--model {name}: not a preset ({}); the server reads no files: paste a config.json instead",
            ftbudget_models::presets::names().join(", ")
        ))
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).expect("plain structs serialize")
}

/// A JSON answer with its status.
fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, to_json(&serde_json::json!({ "error": message })))
}

fn estimate(shared: &Shared, params: &Params) -> Result<String, String> {
    params.check_format()?;
    let mut settings = params.settings()?;
    let model = shared.model(params)?;
    fit_seq_to_model(&model, &mut settings, params.seq_given())?;
    let specs = answers::regime_specs(params.regimes(), answers::DEFAULT_REGIMES);
    let overhead = params.cuda_overhead()?;
    let cmp = answers::comparison(&shared.registry, &model, &specs, &settings, &overhead)
        .map_err(|e| answers::one_line(&e))?;
    let mut text = answers::comparison_json(&cmp, &settings);
    text.push('\n');
    Ok(text)
}

fn fit(shared: &Shared, params: &Params) -> Result<String, String> {
    params.check_format()?;
    let mut settings = params.settings()?;
    let gpu_name = params
        .get("gpu")
        .ok_or("the following required arguments were not provided: --gpu <GPU>")?;
    let gpu = ftbudget_sweep::parse_gpu(gpu_name).map_err(|e| answers::one_line(&e))?;
    let model = shared.model(params)?;
    fit_seq_to_model(&model, &mut settings, params.seq_given())?;
    let specs = answers::regime_specs(params.regimes(), answers::DEFAULT_FIT_REGIMES);
    let overhead = params.fit_overhead()?;
    let timing = params.fit_timing(gpu_name, &settings)?;
    let report = answers::fit(
        &shared.registry,
        &model,
        &specs,
        &settings,
        &gpu,
        &overhead,
        timing.as_ref(),
    )
    .map_err(|e| answers::one_line(&e))?;
    Ok(to_json(&report) + "\n")
}

type Answer = fn(&Shared, &Params) -> Result<String, String>;

/// Why a request's parameters were not read: the status to answer and the message.
type Refused = (StatusCode, String);

fn respond(shared: &Shared, params: Result<Params, Refused>, answer: Answer) -> Response {
    let answered =
        params.and_then(|p| answer(shared, &p).map_err(|m| (StatusCode::BAD_REQUEST, m)));
    match answered {
        Ok(body) => json(StatusCode::OK, body),
        Err((status, message)) => error(status, &message),
    }
}

fn bad(message: String) -> Refused {
    (StatusCode::BAD_REQUEST, message)
}

fn from_query(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Params, Refused> {
    let Query(pairs) = query.map_err(|e| bad(format!("query string: {}", e.body_text())))?;
    Params::from_pairs(pairs).map_err(bad)
}

/// A JSON body's parameters; a body over [`BODY_LIMIT`] is refused with 413.
fn from_body(body: Result<Bytes, BytesRejection>) -> Result<Params, Refused> {
    match body {
        Ok(bytes) => Params::from_json(&bytes).map_err(bad),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body: larger than the limit of {BODY_LIMIT} bytes"),
        )),
        Err(rejection) => Err((
            rejection.status(),
            format!("request body: {}", rejection.body_text()),
        )),
    }
}

async fn get_estimate(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    respond(&shared, from_query(query), estimate)
}

async fn post_estimate(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&shared, from_body(body), estimate)
}

/// `fit` off the async workers: its rank searches take milliseconds.
async fn fit_blocking(shared: Arc<Shared>, params: Result<Params, Refused>) -> Response {
    tokio::task::spawn_blocking(move || respond(&shared, params, fit))
        .await
        .unwrap_or_else(|_| internal_error())
}

async fn get_fit(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    fit_blocking(shared, from_query(query)).await
}

async fn post_fit(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    fit_blocking(shared, from_body(body)).await
}

async fn regimes(State(shared): State<Arc<Shared>>) -> Response {
    json(StatusCode::OK, shared.regimes_json.clone())
}

async fn presets(State(shared): State<Arc<Shared>>) -> Response {
    json(StatusCode::OK, shared.presets_json.clone())
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such page: the page is /, the API /api/estimate, /api/fit, /api/regimes, /api/presets",
    )
}

fn internal_error() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error: this request failed (please report it); the server goes on",
    )
}

/// The application: routes, the body limit, and panics turned into 500 answers.
pub fn app() -> Result<Router, ServerError> {
    let shared = Arc::new(Shared::new()?);
    Ok(guarded(
        Router::new()
            .route("/", get(page))
            .route("/api/estimate", get(get_estimate).post(post_estimate))
            .route("/api/fit", get(get_fit).post(post_fit))
            .route("/api/regimes", get(regimes))
            .route("/api/presets", get(presets))
            .fallback(not_found)
            .with_state(shared),
    ))
}

/// What protects every route: bodies over [`BODY_LIMIT`] are refused (413, answered by the
/// handlers that read bodies), and a panic answers 500 for its request only.
fn guarded(routes: Router) -> Router {
    routes
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| internal_error()))
}

/// Serve [`app`] on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> Result<(), ServerError> {
    let app = app()?;
    axum::serve(listener, app).await.map_err(ServerError::Serve)
}

/// Bind `addr` and serve on a multi-threaded runtime; `on_bound` is told the address bound
/// (port 0 picks a free port).
pub fn run(addr: &str, on_bound: impl FnOnce(SocketAddr)) -> Result<(), ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()
        .map_err(ServerError::Serve)?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error)?;
        on_bound(listener.local_addr().map_err(bind_error)?);
        serve(listener).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn status_of(addr: SocketAddr, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.lines().next().unwrap_or_default().to_string()
    }

    async fn boom() -> &'static str {
        panic!("a handler bug")
    }

    #[test]
    fn a_panicking_handler_answers_500_and_the_server_goes_on() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_io()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = guarded(
            Router::new()
                .route("/boom", get(boom))
                .route("/ok", get(|| async { "ok" })),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        assert_eq!(
            status_of(addr, "/boom"),
            "HTTP/1.1 500 Internal Server Error"
        );
        assert_eq!(status_of(addr, "/ok"), "HTTP/1.1 200 OK");
        assert_eq!(
            status_of(addr, "/boom"),
            "HTTP/1.1 500 Internal Server Error"
        );
        assert_eq!(status_of(addr, "/ok"), "HTTP/1.1 200 OK");
    }
}
