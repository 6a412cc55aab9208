
import pytest

from store.settings import Settings


def test_defaults_are_the_embedded_setup_under_home(tmp_path):
    s = Settings.from_env({}, home=tmp_path)
    assert s.database_url == f"sqlite:///{(tmp_path / 'streamrank.db').resolve()}"
    assert s.broker_url.startswith("sqla+sqlite:///") and s.result_backend.startswith("db+sqlite:///")
    assert s.feast_repo == (tmp_path / "feast").resolve() and s.feast_online == "sqlite"
    assert s.api_key is None and s.port == 8000


def test_environment_overrides_and_round_trip(tmp_path):
    env = {"STREAMRANK_HOME": str(tmp_path), "STREAMRANK_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1/sr",
           "STREAMRANK_BROKER_URL": "redis://127.0.0.1:6379/0", "STREAMRANK_FEAST_ONLINE": "redis://127.0.0.1:6379/1",
           "STREAMRANK_API_KEY": "k", "STREAMRANK_PORT": "8123"}
    s = Settings.from_env(env)
    assert (s.database_url, s.broker_url, s.feast_online, s.api_key, s.port) == (
        env["STREAMRANK_DATABASE_URL"], env["STREAMRANK_BROKER_URL"], env["STREAMRANK_FEAST_ONLINE"], "k", 8123)
    assert Settings.from_env(s.to_env()) == s


@pytest.mark.parametrize("env,msg", [({"STREAMRANK_PORT": "eighty"}, "STREAMRANK_PORT"),
                                     ({"STREAMRANK_FEAST_ONLINE": "memcached://x"}, "STREAMRANK_FEAST_ONLINE")])
def test_bad_values_say_which_variable(env, msg):
    with pytest.raises(ValueError, match=msg):
        Settings.from_env(env)


def test_import_reads_no_environment(monkeypatch):
    import importlib
    import store.settings as mod
    monkeypatch.setenv("STREAMRANK_PORT", "not-a-number")
    importlib.reload(mod)          # must not raise: nothing is read at import
