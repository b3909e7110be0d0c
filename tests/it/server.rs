//! The HTTP server, in process: health, readiness, metrics, request ids,
//! error shape, body limits, graceful stop.

use crate::both_backends;
use crate::common::{PrivateRedis, TestDb, TestServer};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn health_readiness_and_metrics(test_db: TestDb) {
    let server = TestServer::start(test_db.settings(), &[]).await;
    let http = client();

    let res = http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(res.status(), 200);
    let generated = res
        .headers()
        .get("x-request-id")
        .expect("a request id is generated")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(generated.len(), 36);

    let res = http
        .get(server.url("/readyz"))
        .header("x-request-id", "probe-123")
        .send()
        .await
        .expect("readyz");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-request-id"],
        "probe-123",
        "client id echoed"
    );
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert!(body["checks"].get("redis").is_none(), "no redis configured");

    let res = http
        .get(server.url("/no/such/route"))
        .send()
        .await
        .expect("404");
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");

    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"http_requests_total{method="GET",route="/healthz",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"http_requests_total{method="GET",route="<unmatched>",status="404"} 1"#)
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket{method=\"GET\",route=\"/readyz\"")
    );
    server.stop().await;
}

both_backends! {
    health => health_readiness_and_metrics;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_before_being_read() {
    let test_db = TestDb::new(crate::common::Backend::Sqlite)
        .await
        .expect("sqlite");
    let mut settings = test_db.settings();
    settings.server.max_body_bytes = 1024;
    let server = TestServer::start(settings, &[]).await;
    let res = client()
        .post(server.url("/healthz"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 413);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "payload_too_large");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis() {
    let test_db = TestDb::new(crate::common::Backend::Sqlite)
        .await
        .expect("sqlite");

    // Unreachable at start: a clear error, no server.
    let mut settings = test_db.settings();
    settings.redis.url = Some("redis://127.0.0.1:1".to_owned().try_into().expect("url"));
    let err = frontdesk::app::open(settings, &[])
        .await
        .expect_err("no redis");
    assert!(
        format!("{err:#}").starts_with("cannot use Redis at redis://127.0.0.1:1 (redis.url)"),
        "{err:#}"
    );

    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let mut settings = test_db.settings();
    settings.redis.url = Some(redis.url().try_into().expect("url"));
    let server = TestServer::start(settings, &[]).await;
    let ready = |server: &TestServer| {
        let url = server.url("/readyz");
        async move {
            let res = client().get(url).send().await.expect("readyz");
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.expect("json");
            (status, body)
        }
    };
    let (status, body) = ready(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["redis"]["ok"], true);

    // Lost while running: red, with the reason.
    redis.kill();
    let (status, body) = ready(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["redis"]["ok"], false);
    assert!(body["checks"]["redis"]["error"].as_str().is_some());

    // Back: green again, without a restart of Frontdesk.
    redis.restart();
    let mut status = 0;
    for _ in 0..50 {
        status = ready(&server).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    server.stop().await;
}
