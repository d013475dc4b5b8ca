// Shows why the last sign-in failed; the server redirects here with ?failed=1.
const params = new URLSearchParams(location.search);
if (params.has('failed')) {
  const p = document.getElementById('login-error');
  p.textContent = 'That token is not valid.';
  p.hidden = false;
}
