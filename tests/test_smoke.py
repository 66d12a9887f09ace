from tests.conftest import login


def test_login_page_is_russian(client):
    page = client.get("/login").get_data(as_text=True)
    assert "Войти" in page and "Логин" in page


def test_home_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_doctor_sees_own_mo_only_on_home(client, region):
    login(client, region.a.users["doctor"])
    page = client.get("/").get_data(as_text=True)
    assert region.a.mo.short_name in page
    assert region.b.mo.short_name not in page
