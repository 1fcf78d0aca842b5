"""Push to and pull from a Hub-compatible server on 127.0.0.1 (pytest-httpserver), then load offline.

:class:`FakeHub` implements the part of the Hugging Face Hub HTTP API that huggingface_hub uses for
``create_repo``, ``create_branch``, ``create_commit`` (validate-yaml, preupload, the LFS batch API with a basic
PUT upload, the ndjson commit) and ``hf_hub_download`` (HEAD/GET ``/{repo}/resolve/{rev}/{file}`` with
X-Repo-Commit, ETag, X-Linked-Etag and X-Linked-Size). Xet is disabled (HF_HUB_DISABLE_XET=1), as it is
for a Hub without Xet storage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from vaezoo_nvae import pretrained as nvae_pretrained
from werkzeug import Request, Response

import vaezoo
from vaezoo import hookimpl, hub
from vaezoo.cli import main
from vaezoo.errors import VaezooError
from vaezoo.plugins import plugin

# huggingface_hub's basic LFS upload passes a file object as `data=`, which httpx2 deprecates (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

TOKEN = "hf_vaezooTestTokenDoNotPrint0123456789"
REPO = "acme/tiny-vae"


# ---------------------------------------------------------------------------------------------
# A minimal Hub
# ---------------------------------------------------------------------------------------------
def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    trees: dict[str, dict[str, tuple[bytes, bool]]] = field(default_factory=dict)  # commit -> path -> (data, lfs)
    messages: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """State and request handler of a tiny Hub. Writes need ``Authorization: Bearer TOKEN``."""

    def __init__(self, base_url: str, token: str = TOKEN) -> None:
        self.base, self.token = base_url.rstrip("/"), token
        self.repos: dict[str, FakeRepo] = {}
        self.lfs: dict[str, bytes] = {}
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self.faults: dict[str, list[str]] = {}  # filename -> faults for its next GETs ("truncate")

    # -- helpers -------------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    @staticmethod
    def _error(status: int, code: str | None = None, message: str = "", commit: str | None = None) -> Response:
        headers = {"X-Error-Code": code} if code else {}
        if commit:
            headers["X-Repo-Commit"] = commit
        return Response(json.dumps({"error": message or code}), status, headers, content_type="application/json")

    def _commit(self, repo: FakeRepo, branch: str, tree: dict, message: str) -> str:
        parent = repo.branches.get(branch, "")
        digest = hashlib.sha1(f"{parent}\n{message}\n{len(repo.trees)}".encode())
        for path in sorted(tree):
            digest.update(path.encode() + hashlib.sha256(tree[path][0]).digest())
        oid = digest.hexdigest()
        repo.trees[oid], repo.branches[branch], repo.messages[oid] = tree, oid, message
        return oid

    def _repo(self, repo_id: str, request: Request) -> FakeRepo | Response:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(request)):
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        return repo

    def head(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return {path: data for path, (data, _) in repo.trees[repo.branches[branch]].items()}

    # -- dispatch ------------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        self.log.append((request.method, request.path, request.headers.get("Authorization")))
        path = request.path
        routes = [
            (r"/api/repos/create", self.create_repo),
            (r"/api/validate-yaml", self.validate_yaml),
            (r"/api/models/([^/]+/[^/]+)/branch/(.+)", self.create_branch),
            (r"/api/models/([^/]+/[^/]+)/preupload/(.+)", self.preupload),
            (r"/api/models/([^/]+/[^/]+)/commit/(.+)", self.commit),
            (r"/api/models/([^/]+/[^/]+)/revision/(.+)", self.repo_info),
            (r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", self.lfs_batch),
            (r"/_lfs/([0-9a-f]{64})", self.lfs_put),
            (r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.resolve),
        ]
        for pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match:
                return handler(request, *match.groups())
        return self._error(404, None, f"no route for {request.method} {path}")

    # -- write API -----------------------------------------------------------------------------
    def create_repo(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._error(401, None, "Invalid credentials in Authorization header")
        body = request.get_json()
        repo_id = f"{body['organization']}/{body['name']}"
        if repo_id in self.repos:  # the Hub names the existing repo's url in its 409
            body = {"error": "You already created this model repo", "url": f"{self.base}/{repo_id}"}
            return Response(json.dumps(body), 409, content_type="application/json")
        repo = self.repos[repo_id] = FakeRepo(private=body.get("visibility") == "private")
        self._commit(
            repo,
            "main",
            {".gitattributes": (b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", False)},
            "initial commit",
        )
        return Response(
            json.dumps({"url": f"{self.base}/{repo_id}", "name": repo_id}), 200, content_type="application/json"
        )

    def create_branch(self, request: Request, repo_id: str, branch: str) -> Response:
        repo = self._repo(repo_id, request)
        if isinstance(repo, Response):
            return repo
        if not self._authorized(request):
            return self._error(401, None, "Invalid credentials")
        if branch in repo.branches:
            return self._error(409, None, "Branch already exists")
        repo.branches[branch] = repo.branches["main"]
        return Response("{}", 200, content_type="application/json")

    def validate_yaml(self, request: Request) -> Response:
        content = request.get_json()["content"]
        match = re.match(r"---\n(.*?)\n---\n", content, re.S)
        errors = []
        meta = yaml.safe_load(match.group(1)) if match else None
        if not isinstance(meta, dict):
            errors.append({"message": "no YAML metadata block"})
        else:
            license_id = meta.get("license")
            if license_id is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", str(license_id)):
                errors.append({"message": f"license {license_id!r} is not a license id"})
            if license_id == "other" and not (meta.get("license_name") and meta.get("license_link")):
                errors.append({"message": "license other needs license_name and license_link"})
        status = 400 if errors else 200
        return Response(json.dumps({"errors": errors, "warnings": []}), status, content_type="application/json")

    def preupload(self, request: Request, repo_id: str, revision: str) -> Response:
        repo = self._repo(repo_id, request)
        if isinstance(repo, Response):
            return repo
        tree = repo.trees[repo.branches[revision]] if revision in repo.branches else {}
        files = []
        for f in request.get_json()["files"]:
            lfs = f["path"].endswith(".safetensors") or f["size"] > 10_000_000
            old = tree.get(f["path"])
            oid = None if old is None else (hashlib.sha256(old[0]).hexdigest() if old[1] else _git_blob_sha(old[0]))
            files.append(
                {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return Response(json.dumps({"files": files}), 200, content_type="application/json")

    def lfs_batch(self, request: Request, repo_id: str) -> Response:
        if not self._authorized(request):
            return self._error(401, None, "Invalid credentials")
        objects = []
        for obj in request.get_json(force=True)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs:
                entry["actions"] = {"upload": {"href": f"{self.base}/_lfs/{obj['oid']}"}}
            objects.append(entry)
        body = {"transfer": "basic", "objects": objects}
        return Response(json.dumps(body), 200, content_type="application/vnd.git-lfs+json")

    def lfs_put(self, request: Request, oid: str) -> Response:
        data = request.get_data()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, None, "sha256 mismatch")
        self.lfs[oid] = data
        return Response("", 200)

    def commit(self, request: Request, repo_id: str, revision: str) -> Response:
        repo = self._repo(repo_id, request)
        if isinstance(repo, Response):
            return repo
        if not self._authorized(request):
            return self._error(401, None, "Invalid credentials")
        if revision not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        lines = [json.loads(line) for line in request.get_data().splitlines() if line.strip()]
        tree = dict(repo.trees[repo.branches[revision]])
        message = ""
        for item in lines:
            value = item["value"]
            if item["key"] == "header":
                message = value["summary"]
            elif item["key"] == "file":
                tree[value["path"]] = (base64.b64decode(value["content"]), False)
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return self._error(422, None, f"LFS object {value['oid']} was not uploaded")
                tree[value["path"]] = (self.lfs[value["oid"]], True)
            else:
                return self._error(400, None, f"unsupported commit operation {item['key']}")
        oid = self._commit(repo, revision, tree, message)
        body = {"success": True, "commitOid": oid, "commitUrl": f"{self.base}/{repo_id}/commit/{oid}"}
        return Response(json.dumps(body), 200, content_type="application/json")

    def repo_info(self, request: Request, repo_id: str, revision: str) -> Response:
        repo = self._repo(repo_id, request)
        if isinstance(repo, Response):
            return repo
        if revision not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        commit = repo.branches[revision]
        body = {
            "id": repo_id,
            "sha": commit,
            "private": repo.private,
            "siblings": [{"rfilename": p} for p in repo.trees[commit]],
        }
        return Response(json.dumps(body), 200, content_type="application/json")

    # -- read API ------------------------------------------------------------------------------
    def resolve(self, request: Request, repo_id: str, revision: str, filename: str) -> Response:
        repo = self._repo(repo_id, request)
        if isinstance(repo, Response):
            return repo
        commit = repo.branches.get(revision) or (revision if revision in repo.trees else None)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if filename not in repo.trees[commit]:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", commit=commit)
        data, lfs = repo.trees[commit][filename]
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if lfs:
            sha = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{_git_blob_sha(data)}"'
        if request.method == "GET":
            faults = self.faults.get(filename)
            if faults:
                if faults.pop(0) == "truncate":  # the connection ends half-way through the body
                    data = data[: len(data) // 2]
            match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
            if match:
                start = int(match.group(1))
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return Response(data[start:], 206, headers, content_type="application/octet-stream")
        return Response(data, 200, headers, content_type="application/octet-stream")


@pytest.fixture
def fake_hub(httpserver, monkeypatch):
    hub_server = FakeHub(httpserver.url_for("/"))
    httpserver.expect_request(re.compile(".*")).respond_with_handler(hub_server)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.base)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "5")
    yield hub_server
    httpserver.check_handler_errors()


class _TinyTable:
    """A test plugin: a pretrained entry that points at the fake Hub."""

    @hookimpl
    def register_pretrained(self, register):
        register(
            "tiny-pretrained",
            repo_id=REPO,
            revision="main",
            preset="test-vae",
            description="a tiny test model",
            source=nvae_pretrained.SOURCE,
            license=nvae_pretrained.LICENSE,
            license_link=nvae_pretrained.LICENSE_LINK,
            dataset="MNIST 8x8",
            metrics=[{"name": "NLL", "value": 1.5, "unit": "nats", "protocol": nvae_pretrained.PROTOCOL}],
        )


def _model():
    model = vaezoo.create("test-vae").eval()
    with torch.no_grad():
        for p in model.parameters():  # not the seeded initialisation: equal outputs must come from the file
            p.add_(0.1 * torch.randn_like(p))
    return model


def _outputs(model, noise, x):
    with torch.no_grad():
        return {"sample": model.sample(noise[0].shape[0], noise=noise), "nelbo": model(x, noise=noise).nelbo}


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
def test_push_then_download_then_load_offline_in_another_process(fake_hub, tmp_path, monkeypatch, caplog, capfd):
    import huggingface_hub.utils.logging as hf_logging

    model = _model()
    caplog.set_level(logging.DEBUG)
    hf_logging.set_verbosity_debug()
    try:
        info = hub.push_to_hub(model, REPO, token=TOKEN, private=True, commit_message="first upload")
    finally:
        hf_logging.set_verbosity_warning()
    out, err = capfd.readouterr()
    # the token was sent, and appears in no log record, no output
    assert any(auth == f"Bearer {TOKEN}" for _, _, auth in fake_hub.log)
    assert "preupload" in caplog.text  # the debug logs were captured, so their silence about the token means something
    for text in (caplog.text, out, err, str(info)):
        assert TOKEN not in text

    repo = fake_hub.repos[REPO]
    assert repo.private and repo.messages[info.oid] == "first upload"
    files = fake_hub.head(REPO)
    assert set(files) == {".gitattributes", "config.json", "model.safetensors", "README.md"}
    assert repo.trees[info.oid]["model.safetensors"][1], "weights go through LFS"
    assert 'vaezoo.load("hf-hub:acme/tiny-vae")' in files["README.md"].decode()
    assert json.loads(files["config.json"])["model"] == model.config

    # the user path: download fills the cache (private repo: the token comes from HF_TOKEN)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with plugin(_TinyTable()):
        assert main(["download", "tiny-pretrained"]) == 0
    assert "cached in" in capfd.readouterr().out

    noise = [torch.randn(s) for s in model.latent_shapes(3)]
    x = torch.rand(3, *model.image_shape).round()
    save_file({"noise": noise[0], "x": x}, str(tmp_path / "inputs.safetensors"))
    code = (
        "import sys, torch, vaezoo; from safetensors.torch import load_file, save_file\n"
        "m = vaezoo.load('hf-hub:acme/tiny-vae')\n"
        "assert not m.training and m.device.type == 'cpu'\n"
        "i = load_file(sys.argv[1])\n"
        "with torch.no_grad():\n"
        "    out = {'sample': m.sample(3, noise=[i['noise']]), 'nelbo': m(i['x'], noise=[i['noise']]).nelbo}\n"
        "save_file(out, sys.argv[2])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    env.update(HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there: no network
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "inputs.safetensors"), str(tmp_path / "outputs.safetensors")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = load_file(str(tmp_path / "outputs.safetensors"))
    ours = _outputs(model, noise, x)
    for key in ours:
        assert torch.equal(theirs[key], ours[key]), key


def test_cli_push_to_branch_from_token_file_and_repush_unchanged(fake_hub, tmp_path, monkeypatch, capfd):
    # `hf auth login` writes $HF_HOME/token: HF_HOME is honoured at call time
    Path(os.environ["HF_HOME"], "token").write_text(TOKEN)
    folder = _model().save_pretrained(tmp_path / "tiny", license="mit", dataset="mnist")
    args = ["push", str(folder), REPO, "--revision", "v1", "--private", "--commit_message", "to a branch"]
    with plugin(_TinyTable()):  # --pretrained: the card metadata comes from the pretrained table
        assert main([*args, "--pretrained", "tiny-pretrained"]) == 0
    out, err = capfd.readouterr()
    assert f"{REPO}@v1" in out and TOKEN not in out + err
    repo = fake_hub.repos[REPO]
    assert repo.private and set(repo.branches) == {"main", "v1"}
    assert repo.messages[repo.branches["v1"]] == "to a branch"
    assert "config.json" not in fake_hub.head(REPO, "main")
    pushed = fake_hub.head(REPO, "v1")
    metadata = json.loads(pushed["config.json"])["metadata"]
    assert metadata["license"] == nvae_pretrained.LICENSE and metadata["metrics"][0]["value"] == 1.5
    card = ModelCard(pushed["README.md"].decode())  # the Hub's validate-yaml accepted it too
    assert (card.data.license, card.data.license_link) == ("other", nvae_pretrained.LICENSE_LINK)
    assert nvae_pretrained.PROTOCOL in card.text and 'vaezoo.load("hf-hub:acme/tiny-vae")' in card.text

    loaded = hub.load(f"hf-hub:{REPO}@v1")
    assert torch.equal(loaded.decoder[0].weight, vaezoo.load(f"local-dir:{folder}").decoder[0].weight)
    with pytest.raises(VaezooError, match=r"has no config\.json; it is not a saved vaezoo model"):
        hub.load(f"hf-hub:{REPO}")  # main holds only .gitattributes

    # pushing the same folder with the same card again changes nothing and still succeeds
    before = dict(repo.branches)
    with plugin(_TinyTable()):
        assert main([*args, "--pretrained", "tiny-pretrained"]) == 0
    assert repo.branches == before


def test_push_without_token_is_refused_in_one_line(fake_hub, tmp_path, capfd):
    folder = _model().save_pretrained(tmp_path / "tiny")
    assert main(["push", str(folder), REPO]) == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: not allowed to push to acme/tiny-vae") and "\n" not in err
    assert REPO not in fake_hub.repos


def test_push_refuses_a_broken_folder_before_any_request(fake_hub, tmp_path, capfd):
    folder = _model().save_pretrained(tmp_path / "tiny")
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:100])
    assert main(["push", str(folder), REPO]) == 2
    assert "truncated" in capfd.readouterr().err
    assert fake_hub.log == []


def test_interrupted_download_resumes_when_run_again(fake_hub, tmp_path, monkeypatch, capfd):
    model = _model()
    hub.push_to_hub(model, REPO, token=TOKEN)
    fake_hub.faults["model.safetensors"] = ["truncate"]
    fake_hub.log.clear()

    assert main(["download", f"hf-hub:{REPO}"]) == 2
    (err,) = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert "interrupted" in err and "run the same command again" in err
    cache = Path(os.environ["HF_HUB_CACHE"])
    assert not list(cache.rglob("*.incomplete")), "no partial file is left behind"
    assert not list(cache.rglob("model.safetensors")), "no half-written weights in a snapshot"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VaezooError, match="not \\(completely\\) in the Hugging Face cache .* HF_HUB_OFFLINE is set"):
        vaezoo.load(f"hf-hub:{REPO}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    assert main(["download", f"hf-hub:{REPO}"]) == 0
    gets = [path.rsplit("/", 1)[-1] for method, path, _ in fake_hub.log if method == "GET"]
    assert gets.count("config.json") == 1, "the second run reuses what the first one completed"
    assert gets.count("model.safetensors") == 2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    noise = [torch.randn(s) for s in model.latent_shapes(2)]
    x = torch.rand(2, *model.image_shape).round()
    theirs, ours = _outputs(vaezoo.load(f"hf-hub:{REPO}"), noise, x), _outputs(model, noise, x)
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)


def test_download_errors_are_one_line(fake_hub, monkeypatch):
    hub.push_to_hub(_model(), REPO, token=TOKEN, private=True)
    cases = {
        "hf-hub:acme/missing": "repository acme/missing not found",
        f"hf-hub:{REPO}": "not found .*or private: set HF_TOKEN",  # private, no token
    }
    for name, pattern in cases.items():
        with pytest.raises(VaezooError, match=pattern) as info:
            hub.download(name)
        assert "\n" not in str(info.value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(VaezooError, match="revision 'nope' not found in acme/tiny-vae"):
        hub.download(f"hf-hub:{REPO}@nope")
    assert hub.download(f"hf-hub:{REPO}").joinpath("README.md").is_file()


def test_download_draws_its_bars_only_on_a_terminal(fake_hub, monkeypatch, capfd):
    hub.push_to_hub(_model(), REPO, token=TOKEN)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    assert main(["download", f"hf-hub:{REPO}"]) == 0  # stderr is captured: no terminal, no bar
    quiet = capfd.readouterr()
    assert "━" not in quiet.err and "model.safetensors" not in quiet.err
    shutil.rmtree(os.environ["HF_HUB_CACHE"])
    monkeypatch.setenv("VAEZOO_PROGRESS", "1")  # as on a terminal
    assert main(["download", f"hf-hub:{REPO}"]) == 0
    drawn = capfd.readouterr().err
    assert "━" in drawn and "model.safetensors" in drawn and "100%" in drawn
