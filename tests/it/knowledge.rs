//! Knowledge bases through the real binary: `frontdesk kb …` on a scratch
//! install, with the installed embedding model (or without it, on purpose).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::cli::{run, stderr};
use crate::common::{Backend, TestDb, missing_service, repo_path};

/// The installed model's directory, or `None` (skip loudly; CI fails).
pub(crate) fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FRONTDESK_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .or_else(knowledge::embed::default_model_dir)?;
    let paths = knowledge::models::ModelPaths::new(&dir);
    let missing: Vec<&str> = knowledge::models::EMBEDDING_MODELS
        .iter()
        .filter(|m| !paths.missing(m).is_empty())
        .map(|m| m.id)
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    missing_service(
        "the embedding models",
        &format!(
            "{} not installed in {}; run `frontdesk models install`",
            missing.join(" and "),
            dir.display()
        ),
    );
    None
}

/// A scratch install with one bot file per `(workspace, bot)`.
pub(crate) fn install(bots: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let bots_dir = dir.path().join("config/bots");
    std::fs::create_dir_all(&bots_dir).expect("mkdir");
    for (workspace, name) in bots {
        std::fs::write(
            bots_dir.join(format!("{workspace}-{name}.toml")),
            format!(
                "workspace = \"{workspace}\"\nname = \"{name}\"\nsystem_prompt = \"Help.\"\nlanguage = \"en\"\n"
            ),
        )
        .expect("bot file");
    }
    dir
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn kb(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["kb"];
    all.extend_from_slice(args);
    let out = run(cwd, &all, env);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    out
}

pub(crate) fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// `(nDCG, Recall, MRR)` of one retriever in `kb eval` output.
fn scores(eval: &str, retriever: &str) -> (f64, f64, f64) {
    let line = eval
        .lines()
        .find(|l| l.split_whitespace().next() == Some(retriever))
        .unwrap_or_else(|| panic!("no {retriever} line in\n{eval}"));
    let n: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|x| x.parse().expect("number"))
        .collect();
    (n[0], n[1], n[2])
}

/// The covid-faq benchmark through the CLI: quality targets, the batch
/// output format, and a deleted index rebuilt from SQL with the same results.
#[test]
fn covid_faq_through_the_cli_meets_the_quality_bar_and_survives_a_deleted_index() {
    let Some(models) = model_dir() else { return };
    let models = models.display().to_string();
    let env = [("FRONTDESK__EMBEDDING__MODEL_DIR", models.as_str())];
    let dir = install(&[("health", "covid")]);
    let cwd = dir.path();
    let fixture = repo_path("tests/fixtures/retrieval/covid-faq");
    let corpus = fixture.join("corpus.jsonl").display().to_string();
    let queries = fixture.join("queries.jsonl").display().to_string();
    let qrels = fixture.join("qrels.test.tsv").display().to_string();

    let out = ok(&kb(cwd, &["ingest", "--bot", "covid", &corpus], &env));
    assert!(
        out.contains("1 file(s) ingested (213 chunks; 426 texts embedded"),
        "{out}"
    );

    let eval = ok(&kb(
        cwd,
        &[
            "eval",
            "--bot",
            "covid",
            "--queries",
            &queries,
            "--qrels",
            &qrels,
        ],
        &env,
    ));
    eprintln!("{eval}");
    let (bm25, dense, hybrid) = (
        scores(&eval, "bm25"),
        scores(&eval, "dense"),
        scores(&eval, "hybrid"),
    );
    assert!(
        hybrid.0 >= 0.85,
        "hybrid nDCG@10 {} < 0.85\n{eval}",
        hybrid.0
    );
    assert!(
        hybrid.0 >= bm25.0 && hybrid.0 >= dense.0,
        "fusion below a single retriever\n{eval}"
    );
    assert!(hybrid.2 >= bm25.2 && hybrid.2 >= dense.2, "{eval}");

    let batch = ok(&kb(
        cwd,
        &["search", "--bot", "covid", "--queries", &queries],
        &env,
    ));
    let lines: Vec<serde_json::Value> = batch
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 241);
    for line in &lines {
        assert!(line["query_id"].is_string(), "{line}");
        let results = line["results"].as_array().expect("results");
        assert_eq!(results.len(), 10, "{line}");
        let ids: std::collections::HashSet<&str> = results
            .iter()
            .map(|r| r["doc_id"].as_str().expect("doc_id"))
            .collect();
        assert_eq!(ids.len(), 10, "documents are not repeated: {line}");
        let scores: Vec<f64> = results
            .iter()
            .map(|r| r["score"].as_f64().expect("score"))
            .collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked: {line}");
    }
    assert_eq!(lines[0]["query_id"], "q000");
    assert_eq!(lines[0]["results"][0]["doc_id"], "faq000", "{}", lines[0]);

    // A lost index directory is rebuilt from SQL, with the same results and
    // without embedding anything again.
    std::fs::remove_dir_all(cwd.join("data/knowledge")).expect("rm index");
    let again = ok(&kb(
        cwd,
        &["search", "--bot", "covid", "--queries", &queries],
        &env,
    ));
    assert_eq!(again, batch);
    let out = ok(&kb(cwd, &["ingest", "--bot", "covid", &corpus], &env));
    assert!(
        out.contains("0 file(s) ingested") && out.contains("1 unchanged"),
        "{out}"
    );
}

pub(crate) fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path.display().to_string()
}

/// A DOCX whose document.xml inflates to 300 MB of spaces.
fn zip_bomb() -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    zip.start_file("word/document.xml", options).expect("start");
    let block = vec![b' '; 1 << 20];
    for _ in 0..300 {
        zip.write_all(&block).expect("write");
    }
    zip.finish().expect("finish").into_inner()
}

/// Broken files are reported one by one; the good ones are ingested, the
/// exit status says something failed, nothing of a broken file is stored.
#[test]
fn bad_files_get_their_own_error_and_the_rest_is_ingested() {
    let dir = install(&[("acme", "support")]);
    let cwd = dir.path();
    let docs = cwd.join("docs");
    std::fs::create_dir_all(&docs).expect("mkdir");
    write(
        &docs,
        "returns.md",
        b"# Returns\n\nParcels can be returned within thirty days of delivery.\n",
    );
    write(
        &docs,
        "corrupt.pdf",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage\n%%EOF",
    );
    write(&docs, "empty.pdf", b"");
    write(&docs, "bomb.docx", &zip_bomb());
    write(&docs, "fake.docx", b"this is not a zip archive at all");
    let binary: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&docs, "binary.txt", &binary);
    write(&docs, "faq.csv", b"Frage;Antwort\nWhere?;Here\n");
    write(
        &docs,
        "bad.jsonl",
        b"{\"_id\":\"a\",\"text\":\"fine\"}\n{not json\n",
    );
    write(&docs, "logo.png", b"\x89PNG\r\n");

    // BM25 only: the model is beside the point here.
    let env = [("FRONTDESK__EMBEDDING__MODEL_DIR", "/nonexistent/models")];
    let out = kb(
        cwd,
        &["ingest", "--bot", "support", &docs.display().to_string()],
        &env,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("frontdesk models install"),
        "the degraded mode is loud: {err}"
    );
    for (file, reason) in [
        ("corrupt.pdf", "corrupt pdf"),
        ("empty.pdf", ""),
        ("bomb.docx", "limit"),
        ("fake.docx", "not a zip"),
        ("binary.txt", "binary"),
        ("bad.jsonl", "line 2"),
    ] {
        let line = err
            .lines()
            .find(|l| l.starts_with("FAILED") && l.contains(file))
            .unwrap_or_else(|| panic!("no error line for {file} in\n{err}"));
        assert!(line.contains(reason), "{file}: {line}");
    }
    assert!(err.contains("skipped") && err.contains("logo.png"), "{err}");
    let summary = stdout(&out);
    // faq.csv with German headers is accepted (frage/antwort).
    assert!(
        summary.contains("2 file(s) ingested") && summary.contains("6 failed"),
        "{summary}\n{err}"
    );

    let list = ok(&kb(cwd, &["list", "--bot", "support"], &env));
    assert!(
        list.contains("returns.md") && list.contains("faq.csv"),
        "{list}"
    );
    assert!(
        !list.contains("corrupt.pdf") && !list.contains("bomb.docx"),
        "{list}"
    );
    let found = ok(&kb(
        cwd,
        &["search", "--bot", "support", "how do I return a parcel"],
        &env,
    ));
    assert!(
        found.contains("(bm25)") && found.contains("returns.md"),
        "{found}"
    );
}

/// A bot never sees another bot's chunks, on either backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_is_scoped_to_the_bot() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(db) = TestDb::new(backend).await else {
            continue;
        };
        let url = db.url.to_string();
        let dir = install(&[("acme", "support"), ("globex", "support")]);
        let cwd = dir.path();
        let env = [
            ("FRONTDESK__DATABASE__URL", url.as_str()),
            ("FRONTDESK__EMBEDDING__MODEL_DIR", "/nonexistent/models"),
        ];
        let a = write(
            cwd,
            "acme.md",
            b"# Acme\n\nOur warehouse ships zeppelins on Tuesdays.\n",
        );
        let b = write(
            cwd,
            "globex.md",
            b"# Globex\n\nGlobex refunds submarines within a fortnight.\n",
        );
        ok(&kb(cwd, &["ingest", "--bot", "acme/support", &a], &env));
        ok(&kb(cwd, &["ingest", "--bot", "globex/support", &b], &env));
        let ambiguous = kb(cwd, &["search", "--bot", "support", "zeppelins"], &env);
        assert!(
            stderr(&ambiguous).contains("--bot WORKSPACE/support"),
            "{}",
            stderr(&ambiguous)
        );
        let own = ok(&kb(
            cwd,
            &["search", "--bot", "acme/support", "zeppelins"],
            &env,
        ));
        assert!(own.contains("acme.md"), "{own}");
        let other = ok(&kb(
            cwd,
            &["search", "--bot", "acme/support", "submarines refunds"],
            &env,
        ));
        assert!(
            other.contains("no results") && !other.contains("globex"),
            "{other}"
        );
    }
}

/// Without the model, ingest and search work on BM25 and say so; once the
/// model is there, re-ingesting embeds what was stored without vectors, and
/// a changed file re-embeds only its changed chunks.
#[test]
fn vectors_arrive_later_and_only_changed_chunks_are_embedded() {
    let Some(models) = model_dir() else { return };
    let models = models.display().to_string();
    let dir = install(&[("acme", "support")]);
    let cwd = dir.path();
    let section = |title: &str, body: &str| format!("## {title}\n\n{body}\n\n");
    let original = format!(
        "# Help\n\n{}{}{}",
        section("Returns", "Parcels can be returned within thirty days."),
        section(
            "Shipping",
            "We ship to every country in Europe within three days."
        ),
        section("Warranty", "Every kettle has a two-year warranty."),
    );
    let file = write(cwd, "help.md", original.as_bytes());

    let none = [("FRONTDESK__EMBEDDING__MODEL_DIR", "/nonexistent/models")];
    let out = ok(&kb(cwd, &["ingest", "--bot", "support", &file], &none));
    assert!(out.contains("3 chunks; 0 texts embedded"), "{out}");
    let found = ok(&kb(
        cwd,
        &["search", "--bot", "support", "Can I send it back?"],
        &none,
    ));
    assert!(
        found.starts_with("confidence") && found.contains("(bm25)"),
        "{found}"
    );

    let env = [("FRONTDESK__EMBEDDING__MODEL_DIR", models.as_str())];
    let out = ok(&kb(cwd, &["ingest", "--bot", "support", &file], &env));
    assert!(
        out.contains("3 chunks; 3 texts embedded, 0 chunks reused"),
        "{out}"
    );
    let found = ok(&kb(
        cwd,
        &[
            "search",
            "--bot",
            "support",
            "Can I send my parcel back?",
            "--limit",
            "1",
        ],
        &env,
    ));
    assert!(
        found.contains("(hybrid)") && found.contains("Help › Returns"),
        "{found}"
    );

    let changed = original.replace("two-year", "three-year");
    std::fs::write(&file, changed).expect("write");
    let out = ok(&kb(cwd, &["ingest", "--bot", "support", &file], &env));
    assert!(
        out.contains("3 chunks; 1 texts embedded, 2 chunks reused"),
        "{out}"
    );

    // Out of scope: low confidence, so the handoff policy can act on it.
    let off = ok(&kb(
        cwd,
        &["search", "--bot", "support", "What is the capital of Peru?"],
        &env,
    ));
    let confidence: f64 = off
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("confidence");
    assert!(confidence < 0.35, "{off}");

    let gone = ok(&kb(cwd, &["delete", "--bot", "support", "help.md"], &env));
    assert!(gone.contains("deleted"), "{gone}");
    let found = ok(&kb(
        cwd,
        &["search", "--bot", "support", "parcels returned"],
        &env,
    ));
    assert!(found.contains("no results"), "{found}");
}

/// A change of embedding model (here `embedding.model`, as after a restart
/// with a new setting) re-embeds the bot's knowledge while search goes on
/// with the old vectors, then swaps every chunk at once; later ingests
/// embed with the new model. On both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_model_reembeds_while_search_goes_on_with_the_old_vectors() {
    use frontdesk::kb::{Knowledge, ModelChange, Quiet};
    use knowledge::index::Retriever;
    use knowledge::models::{MINILM, MULTILINGUAL_E5};
    use store::models::knowledge::ChunkRow;

    let Some(models) = model_dir() else { return };
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(db) = TestDb::new(backend).await else {
            continue;
        };
        db.write_bot(
            "help.toml",
            "workspace = \"w\"\nname = \"help\"\nsystem_prompt = \"Help.\"\nlanguage = \"en\"\n",
        );
        let docs = db.dir.path().join("docs");
        std::fs::create_dir_all(&docs).expect("mkdir");
        std::fs::write(
            docs.join("help.md"),
            "# Help\n\n## Returns\n\nParcels can be returned within thirty days of delivery.\n\n\
             ## Shipping\n\nWe ship to every country in Europe within three working days.\n\n\
             ## Warranty\n\nEvery kettle comes with a two-year warranty against defects.\n\n\
             ## Payment\n\nWe accept cards, bank transfers and invoices for companies.\n",
        )
        .expect("write");
        let mut settings = db.settings();
        settings.embedding.model_dir = models.clone();
        settings.embedding.auto_install = false;
        let app = frontdesk::app::open(settings.clone(), &[])
            .await
            .expect("open");
        let bot = {
            let mut conn = app.db.get().await.expect("conn");
            store::models::bot::Bot::find_by_name(&mut conn, "help")
                .await
                .expect("bot")
                .remove(0)
        };
        let question = "Can I send my parcel back?";
        let top = |found: &frontdesk::kb::SearchOutcome| {
            assert_eq!(
                found.retriever,
                Retriever::Hybrid,
                "search lost its vectors"
            );
            found.hits[0].chunk.heading_path.clone()
        };
        app.knowledge
            .ingest_paths(&app.db, &bot, std::slice::from_ref(&docs), &Quiet)
            .await
            .expect("ingest");
        let index = app.knowledge.index(&app.db, &bot).await.expect("index");
        assert_eq!(index.model(), MINILM.id);

        // The setting changes: nothing is re-embedded yet, and search goes
        // on with MiniLM's vectors and MiniLM for the question.
        let changed = std::sync::Arc::new(
            Knowledge::new(&settings.data_dir, &models).with_model(&MULTILINGUAL_E5),
        );
        let found = changed
            .search(&app.db, &bot, question, 3, Retriever::Hybrid)
            .await
            .expect("search");
        assert_eq!(top(&found), "Help › Returns");
        assert_eq!(
            changed.index(&app.db, &bot).await.expect("index").model(),
            MINILM.id
        );

        // Re-embedding in the background; every search meanwhile is hybrid
        // and right.
        let running = tokio::spawn({
            let changed = changed.clone();
            let db = app.db.clone();
            let bot = bot.clone();
            async move { changed.change_model(&db, &bot, &Quiet).await }
        });
        let mut searches = 0;
        while !running.is_finished() || searches == 0 {
            let found = changed
                .search(&app.db, &bot, question, 3, Retriever::Hybrid)
                .await
                .expect("search during the change");
            assert_eq!(top(&found), "Help › Returns");
            searches += 1;
        }
        let outcome = running.await.expect("task").expect("change");
        assert_eq!(
            outcome,
            ModelChange::Switched {
                model: MULTILINGUAL_E5.id,
                embedded: 4
            }
        );

        // Swapped: the index is rebuilt for the new model, whose vectors
        // are all there, and the next round has nothing to do.
        let index = changed.index(&app.db, &bot).await.expect("index");
        assert_eq!(index.model(), MULTILINGUAL_E5.id);
        assert_eq!(index.len(), (4, 4));
        let found = changed
            .search(&app.db, &bot, question, 3, Retriever::Hybrid)
            .await
            .expect("search");
        assert_eq!(top(&found), "Help › Returns");
        let swedish = changed
            .search(
                &app.db,
                &bot,
                "Hur lång är garantin på vattenkokaren?",
                3,
                Retriever::Dense,
            )
            .await
            .expect("search in Swedish");
        assert_eq!(swedish.hits[0].chunk.heading_path, "Help › Warranty");
        assert_eq!(
            changed
                .change_model(&app.db, &bot, &Quiet)
                .await
                .expect("again"),
            ModelChange::Current
        );

        // A new document is embedded with the new model straight away.
        std::fs::write(
            docs.join("more.md"),
            "# More\n\n## Opening hours\n\nThe shop opens at nine and closes at six.\n",
        )
        .expect("write");
        changed
            .ingest_paths(&app.db, &bot, std::slice::from_ref(&docs), &Quiet)
            .await
            .expect("ingest");
        let mut conn = app.db.get().await.expect("conn");
        let ids = ChunkRow::ids(&mut conn, &bot.id, MULTILINGUAL_E5.id)
            .await
            .expect("ids");
        assert_eq!(ids.len(), 5);
        assert!(ids.iter().all(|(_, of_model)| *of_model), "{ids:?}");

        // An ingest that started before the swap stores a chunk with the
        // old model's vectors: the next round re-embeds just that one.
        let late = store::models::knowledge::NewChunk {
            kind: "passage",
            doc_ref: "late.md".into(),
            title: None,
            heading_path: "Late".into(),
            body: "Gift cards never expire.".into(),
            page: None,
            line: None,
            tokens: 5,
            content_hash: "late".into(),
            embeddings: Some(store::models::knowledge::pack_vectors(&[vec![
                0.05;
                knowledge::models::DIMENSIONS
            ]])),
            embedding_model: Some(MINILM.id.into()),
        };
        let doc = store::models::knowledge::NewDocument {
            source: "late.md".into(),
            doc_ref: "late.md".into(),
            format: "markdown".into(),
            title: None,
            content_hash: "late".into(),
            size_bytes: 24,
            page_count: None,
            pages_without_text: None,
        };
        store::models::knowledge::Document::replace(&mut conn, &bot.id, &doc, &[late])
            .await
            .expect("late ingest");
        drop(conn);
        assert_eq!(
            changed
                .change_model(&app.db, &bot, &Quiet)
                .await
                .expect("round"),
            ModelChange::Switched {
                model: MULTILINGUAL_E5.id,
                embedded: 1
            }
        );
        let index = changed.index(&app.db, &bot).await.expect("index");
        assert_eq!((index.model(), index.len()), (MULTILINGUAL_E5.id, (6, 6)));
    }
}
