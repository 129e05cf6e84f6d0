"""Catalog pages: full page and htmx fragment, search, filters, sort, detail, login required."""

import re

import pytest

pytestmark = pytest.mark.usefixtures("catalog")

HTMX = {"HX-Request": "true"}


def row_names(html: str) -> list[str]:
    body = html.split('<tbody id="preset-rows">', 1)[1].split("</tbody>", 1)[0]
    return re.findall(r'class="cell-title" href="[^"]+">([^<]+)</a>', body)


def test_anonymous_user_is_sent_to_the_login_page(client):
    for url in ["/catalog/", "/catalog/presets/microsoft/phi-4/"]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")


def test_login_page_signs_in(client, user):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert 'for="id_username"' in page.text
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"})
    assert response.status_code == 302
    assert client.get("/catalog/").status_code == 200


def test_full_page_lists_every_active_preset(user_client):
    response = user_client.get("/catalog/")
    assert response.status_code == 200
    html = response.text
    assert "<html" in html and 'id="preset-filters"' in html
    names = row_names(html)
    assert len(names) == 65
    assert "htmx-2.min.js" in html  # django-htmx's bundled copy, not a CDN
    # Presets KAITO no longer accepts sort after the accepted ones and say so.
    assert names[-5:] == ["falcon-40b", "falcon-40b-instruct", "falcon-7b", "falcon-7b-instruct", "phi-2"]
    assert "No longer accepted" in html and "Deprecated" in html


def test_htmx_request_gets_only_the_results_fragment(user_client):
    response = user_client.get("/catalog/?q=phi-3", headers=HTMX)
    html = response.text
    assert "<html" not in html and 'id="preset-filters"' not in html
    assert html.strip().startswith('<section id="preset-results"')
    assert row_names(html) == [
        "microsoft/Phi-3-medium-128k-instruct",
        "microsoft/Phi-3-medium-4k-instruct",
        "microsoft/Phi-3-mini-128k-instruct",
        "microsoft/Phi-3-mini-4k-instruct",
        "microsoft/Phi-3.5-mini-instruct",
    ]
    # The same URL without htmx renders the whole page with the same rows (works without JavaScript).
    full = user_client.get("/catalog/?q=phi-3").text
    assert "<html" in full and row_names(full) == row_names(html)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("q=phi-3-mini-128k", ["microsoft/Phi-3-mini-128k-instruct"]),  # legacy alias
        (
            "q=meta-llama",
            ["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct"],
        ),  # publisher
        ("q=qwen2.5-coder&tunable=on", ["Qwen/Qwen2.5-Coder-32B-Instruct", "Qwen/Qwen2.5-Coder-7B-Instruct"]),
        ("q=gemma-3&gated=yes", ["google/gemma-3-27b-it", "google/gemma-3-4b-it"]),
        ("q=ministral&runtime=transformers", []),
        (
            "q=ministral&runtime=vllm&sort=-weight",
            [
                "mistralai/Ministral-3-14B-Instruct-2512",
                "mistralai/Ministral-3-8B-Instruct-2512",
                "mistralai/Ministral-3-3B-Instruct-2512",
            ],
        ),
        ("q=qwen2.5-coder&fits=Standard_NC24ads_A100_v4", ["Qwen/Qwen2.5-Coder-7B-Instruct"]),
        (
            "q=qwen2.5-coder&fits=Standard_NC40ads_H100_v5",
            [
                "Qwen/Qwen2.5-Coder-32B-Instruct",
                "Qwen/Qwen2.5-Coder-7B-Instruct",
            ],
        ),
    ],
)
def test_search_filters_and_sort(user_client, query, expected):
    assert row_names(user_client.get(f"/catalog/?{query}", headers=HTMX).text) == expected


def test_tunable_filter_gives_the_nine_tunable_models(user_client):
    names = row_names(user_client.get("/catalog/?tunable=on").text)
    assert len(names) == 9
    assert "microsoft/Phi-3-mini-128k-instruct" in names


def test_unknown_filter_values_fall_back_to_no_filter(user_client):
    response = user_client.get("/catalog/?fits=Standard_NC6s_v3&sort=bogus")
    assert response.status_code == 200
    assert len(row_names(response.text)) == 65


def test_detail_page_shows_fit_table_and_facts(user_client):
    response = user_client.get("/catalog/presets/Qwen/Qwen2.5-Coder-32B-Instruct/")
    html = response.text
    assert response.status_code == 200
    assert "qwen2.5-coder-32b-instruct" in html  # alias and served name
    assert "apache-2.0" in html and "61.03 GiB" in html and "32768" in html
    row = html.split('id="fit-Standard_NC24ads_A100_v4"', 1)[1].split("</tr>", 1)[0]
    assert "2 nodes" in row and "$7.34" in row  # 2 × $3.67
    smallest = html.split('id="fit-Standard_NC40ads_H100_v5"', 1)[1].split("</tr>", 1)[0]
    assert "smallest" in smallest and "fits, 1 node" in smallest
    assert "Fine-tune" in html and "Deploy" in html


def test_detail_by_legacy_alias_and_for_a_rejected_name(user_client):
    assert "microsoft/Phi-3-mini-128k-instruct" in user_client.get("/catalog/presets/phi-3-mini-128k-instruct/").text
    falcon = user_client.get("/catalog/presets/falcon-7b/").text
    assert 'id="acceptance-note"' in falcon and "no longer resolves" in falcon
    assert "Deploy" not in falcon


def test_gated_model_detail_says_a_token_is_needed(user_client):
    html = user_client.get("/catalog/presets/llama-3.1-8b-instruct/").text
    assert "Needed" in html and "downloadAuthRequired" in html


def test_unknown_preset_is_404(user_client):
    assert user_client.get("/catalog/presets/nobody/nothing/").status_code == 404
