//! Live job progress as server-sent events: `GET /events/jobs/<id>` sends the job (the same JSON the job page's
//! server function returns) each time it changes, and ends after a terminal state. The job page subscribes after
//! hydration; without JavaScript it offers a refresh link instead.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use orchestrator::jobs::JobError;
use orchestrator::service::Service;

/// How often the stream looks at the job; well under a task's usual length, cheap for SQLite.
const POLL: Duration = Duration::from_millis(300);

pub async fn job_events(State(s): State<Arc<Service>>, Path(id): Path<String>) -> Response {
    match s.jobs.get(&id).await {
        Ok(_) => {}
        Err(JobError::NotFound(_)) => return (StatusCode::NOT_FOUND, format!("no job {id}")).into_response(),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
    // State: (service, job id, last JSON sent, whether the last one sent was terminal).
    let events = stream::unfold((s, id, String::new(), false), |(s, id, last, done)| async move {
        if done {
            return None;
        }
        loop {
            match s.jobs.get(&id).await {
                Ok(job) => {
                    let terminal = job.state.is_terminal();
                    let text = serde_json::to_string(&app::data::job_row(job)).unwrap_or_default();
                    if text != last {
                        let ev = Event::default().event("job").data(text.clone());
                        return Some((Ok::<_, Infallible>(ev), (s, id, text, terminal)));
                    }
                }
                Err(e) => {
                    let ev = Event::default().event("problem").data(e.to_string());
                    return Some((Ok(ev), (s, id, last, true)));
                }
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}
