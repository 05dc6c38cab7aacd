// The Panal web console: a small single-page app over the public API, served by every node.
// No framework, no build step: hash routes, the session in an HttpOnly cookie set by
// POST /ui/session. The bookshop loads with the page; the cluster and energy pages are
// imported when first opened, to keep the first load small.

import { api, clearError, h, input, session, show, showError, submitter } from './lib.js';
import { bookView, booksView, invoiceView, orderView, ordersView, salesView, sellView } from './shop.js';

let leaveView = () => {}; // stops the current view's timers and streams

session.onSignedOut = () => {
  renderHeader();
  location.hash = '#/login?next=' + encodeURIComponent(location.hash);
};

function renderHeader() {
  const me = session.me;
  const who = document.getElementById('who');
  document.querySelectorAll('[data-auth]').forEach((a) => { a.hidden = !me; });
  document.querySelectorAll('[data-admin]').forEach((a) => { a.hidden = !me || me.role !== 'admin'; });
  if (me) {
    who.replaceChildren(
      h('span', { id: 'signed-in-as' }, `${me.username} (${me.role})`),
      h('button', { type: 'button', class: 'secondary', id: 'sign-out', onclick: signOut }, 'Sign out'),
    );
  } else {
    who.replaceChildren(h('a', { href: '#/login', id: 'sign-in-link' }, 'Sign in'));
  }
  const route = location.hash.split('?')[0].split('/')[1] || 'books';
  document.querySelectorAll('#nav a').forEach((a) => {
    if (a.getAttribute('href') === `#/${route}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
}

async function signOut() {
  try {
    await api('DELETE', '/ui/session');
  } catch (err) {
    if (err.status !== 401) return showError(err);
  }
  session.me = null;
  location.hash = '#/login';
  renderHeader();
}

function loginView(params) {
  const form = submitter(h('form', { id: 'login-form' },
    input('Username', { name: 'username', autocomplete: 'username', required: true }),
    input('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
    h('button', { type: 'submit' }, 'Sign in')), async (data) => {
    await api('POST', '/ui/session', { username: data.get('username'), password: data.get('password') });
    session.me = await api('GET', '/api/v1/auth/me');
    const next = params.get('next');
    location.hash = next && next.startsWith('#/') && !next.startsWith('#/login') ? next : '#/books';
  });
  show('Sign in', form);
  form.querySelector('input').focus();
}

async function route() {
  leaveView();
  leaveView = () => {};
  clearError();
  const [path, query] = (location.hash.slice(1) || '/books').split('?');
  const params = new URLSearchParams(query || '');
  const seg = path.split('/').filter(Boolean);
  renderHeader();
  try {
    if (seg[0] === 'login') return loginView(params);
    if (seg[0] === 'orders' && seg[1] && seg[2] === 'invoice') return await invoiceView(seg[1]);
    if (seg[0] === 'orders' && seg[1]) return await orderView(seg[1]);
    if (seg[0] === 'orders') return await ordersView(params);
    if (seg[0] === 'sales') return await salesView(params);
    if (seg[0] === 'sell') return sellView();
    if (seg[0] === 'cluster' || seg[0] === 'energy') {
      if (!session.me) {
        location.hash = '#/login?next=' + encodeURIComponent(location.hash);
        return undefined;
      }
      if (seg[0] === 'cluster') {
        const { clusterView } = await import('./cluster.js');
        return await clusterView((leave) => { leaveView = leave; }, session.me);
      }
      const { deviceView, energyView } = await import('./energy.js');
      return await (seg[1] ? deviceView(seg[1], params) : energyView());
    }
    if (seg[0] === 'books' && seg[1]) return await bookView(seg[1]);
    return await booksView(params);
  } catch (err) {
    show('Something went wrong', h('p', {}, h('a', { href: '#/books' }, 'Back to the books')));
    showError(err);
    return undefined;
  }
}

async function start() {
  const whoami = api('GET', '/api/v1/auth/me').then((user) => { session.me = user; }, () => {
    session.me = null; // not signed in, or the session ended
  });
  window.addEventListener('hashchange', route);
  // The book list needs no account: it loads alongside the sign-in check, which then
  // fills the header. Every other page waits for it.
  const path = location.hash.slice(1).split('?')[0];
  if (path === '' || path === '/' || path === '/books') await Promise.all([whoami.then(renderHeader), route()]);
  else await whoami.then(route);
  performance.mark('panal-ready'); // first view rendered: what the load budget measures
  document.body.dataset.ready = 'true'; // the browser test waits for this
}

start();
