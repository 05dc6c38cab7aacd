// The bookshop: browse and search with pagination, a book's page (buy; its seller edits it),
// publishing, my orders with their history, paying with the test cards, the invoice (view
// and print), and a seller's sales with shipping.

import {
  api, h, input, money, needSignIn, select, session, show, statusBadge, submitter, table, when,
} from './lib.js';

const PAGE = 6;
let cursorStack = []; // cursors of the pages before the current one, for "Previous"

export async function booksView(params) {
  const q = params.get('q') || '';
  const cursor = params.get('cursor') || '';
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (q) query.set('q', q);
  if (cursor) query.set('cursor', cursor);
  else cursorStack = [];
  const page = await api('GET', `/api/v1/books?${query}`);
  const search = h('form', { class: 'inline', role: 'search', id: 'search-form' },
    input('Search books', { name: 'q', type: 'search', value: q, placeholder: 'title, author or words' }),
    h('button', { type: 'submit' }, 'Search'));
  search.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/books?q=${encodeURIComponent(new FormData(search).get('q'))}`;
  });
  const list = h('ul', { class: 'grid', id: 'books' }, page.items.map((b) => h('li', { class: 'card' },
    h('h2', {}, h('a', { href: `#/books/${b.id}` }, b.title)),
    h('div', {}, b.author),
    h('div', { class: 'muted' }, `${money(b.price_cents, b.currency)} · ${b.stock ? `${b.stock} in stock` : 'out of stock'}`))));
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const qs = (c) => `#/books?q=${encodeURIComponent(q)}${c ? `&cursor=${encodeURIComponent(c)}` : ''}`;
  if (cursor) {
    pager.append(h('button', { type: 'button', class: 'secondary', id: 'prev-page', onclick: () => {
      location.hash = qs(cursorStack.pop() || '');
    } }, 'Previous'));
  }
  if (page.next_cursor) {
    pager.append(h('button', { type: 'button', id: 'next-page', onclick: () => {
      cursorStack.push(cursor);
      location.hash = qs(page.next_cursor);
    } }, 'Next'));
  }
  pager.append(h('span', { class: 'muted' }, `page ${cursorStack.length + 1}`));
  show(q ? `Books matching “${q}”` : 'Books', search,
    page.items.length ? list : h('p', {}, 'No books match.'), pager);
}

// The fields of a listing, filled with `b` when editing.
function bookForm(id, b, action) {
  const price = b ? (b.price_cents / 100).toFixed(2) : '';
  return submitter(h('form', { id },
    input('Title', { name: 'title', required: true, maxlength: 200, value: b ? b.title : '' }),
    input('Author', { name: 'author', required: true, maxlength: 200, value: b ? b.author : '' }),
    h('label', {}, 'Description', h('textarea', { name: 'description', rows: 4, maxlength: 5000 }, b ? b.description : '')),
    input('Price (tax included)', { name: 'price_cents', type: 'number', min: '0.01', step: '0.01', required: true, value: price }),
    select('Currency', { name: 'currency' }, [['EUR', 'EUR'], ['GBP', 'GBP'], ['USD', 'USD']], b ? b.currency : 'EUR'),
    input('Stock', { name: 'stock', type: 'number', min: 0, max: 1000000, required: true, value: b ? b.stock : 1 }),
    h('button', { type: 'submit' }, b ? 'Save changes' : 'Publish')), (data) => action({
    title: data.get('title'),
    author: data.get('author'),
    description: data.get('description'),
    price_cents: Math.round(Number(data.get('price_cents')) * 100),
    currency: data.get('currency'),
    stock: Number(data.get('stock')),
  }));
}

export function sellView() {
  if (needSignIn()) return;
  show('Publish a book', bookForm('publish-form', null, async (book) => {
    const created = await api('POST', '/api/v1/books', book);
    location.hash = `#/books/${created.id}`;
  }));
}

export async function bookView(id, notice) {
  const b = await api('GET', `/api/v1/books/${id}`);
  const buy = submitter(h('form', { class: 'inline', id: 'buy-form' },
    input('Quantity', { name: 'quantity', type: 'number', min: 1, max: Math.max(b.stock, 1), value: 1, required: true }),
    h('button', { type: 'submit' }, 'Buy')), async (data) => {
    if (needSignIn()) return;
    const order = await api('POST', '/api/v1/orders', { book_id: b.id, quantity: Number(data.get('quantity')) });
    location.hash = `#/orders/${order.id}`;
  });
  const me = session.me;
  const mine = me && (me.id === b.seller_id || me.role === 'admin');
  const edit = mine ? [h('h2', {}, 'Edit the listing'), bookForm('edit-form', b, async (patch) => {
    await api('PATCH', `/api/v1/books/${b.id}`, patch);
    await bookView(b.id, 'Saved.');
  })] : [];
  show(b.title,
    notice ? h('p', { class: 'success', role: 'status', id: 'notice' }, notice) : null,
    h('p', {}, `by ${b.author} · sold by ${b.seller}`),
    h('p', { class: 'description' }, b.description),
    h('p', {}, h('strong', {}, money(b.price_cents, b.currency)), ` · ${b.stock} in stock`),
    b.stock > 0 ? buy : h('p', {}, 'Out of stock.'),
    ...edit,
    h('p', {}, h('a', { href: '#/books' }, '← All books')));
}

function ordersTable(id, page, extra) {
  return table(id, ['Order', 'Book', 'Qty', 'Total', 'Status', 'Placed'].concat(extra ? [extra.heading] : []),
    page.items.map((o) => h('tr', { 'data-order': o.id },
      h('td', {}, h('a', { href: `#/orders/${o.id}` }, `#${o.id}`)), h('td', {}, o.book_title),
      h('td', {}, o.quantity), h('td', {}, money(o.total_cents, o.currency)), h('td', {}, statusBadge(o.status)),
      h('td', {}, when(o.created_at)), extra ? h('td', {}, extra.cell(o)) : null)));
}

function pagerLink(route, next) {
  return next ? h('nav', { class: 'pager', 'aria-label': 'Pages' },
    h('a', { class: 'button', href: `${route}?cursor=${encodeURIComponent(next)}` }, 'Next')) : null;
}

export async function ordersView(params) {
  if (needSignIn()) return;
  const cursor = params.get('cursor') || '';
  const page = await api('GET', `/api/v1/orders?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
  show('My orders', page.items.length ? ordersTable('orders', page) : h('p', {}, 'No orders yet.'),
    pagerLink('#/orders', page.next_cursor));
}

export async function salesView(params) {
  if (needSignIn()) return;
  const cursor = params.get('cursor') || '';
  const page = await api('GET', `/api/v1/sales?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
  const ship = (o) => (o.status === 'paid' ? h('a', { href: `#/orders/${o.id}`, class: 'button' }, 'Ship') : '');
  show('My sales', h('p', {}, h('a', { href: '#/sell', class: 'button' }, 'Publish a book')),
    page.items.length ? ordersTable('sales', page, { heading: 'Action', cell: ship }) : h('p', {}, 'No sales yet.'),
    pagerLink('#/sales', page.next_cursor));
}

export async function orderView(id, notice) {
  if (needSignIn()) return;
  const o = await api('GET', `/api/v1/orders/${id}`);
  const me = session.me;
  const parts = [
    h('p', {}, `${o.quantity} × `, h('a', { href: `#/books/${o.book_id}` }, o.book_title),
      ` · ${money(o.total_cents, o.currency)} · `, statusBadge(o.status)),
  ];
  if (notice) parts.push(h('p', { class: 'success', role: 'status', id: 'notice' }, notice));
  if (o.status === 'pending_payment' && o.buyer_id === me.id) {
    const pay = submitter(h('form', { id: 'pay-form' },
      h('p', { class: 'muted' }, `Reserved until ${when(o.reserved_until)}. Test cards: 4242 4242 4242 4242 pays, 4000 0000 0000 0002 is declined.`),
      input('Card number', { name: 'card_number', inputmode: 'numeric', autocomplete: 'cc-number', required: true }),
      input('Expiry (MM/YY)', { name: 'expiry', autocomplete: 'cc-exp', placeholder: 'MM/YY', required: true }),
      input('CVC', { name: 'cvc', inputmode: 'numeric', autocomplete: 'cc-csc', required: true }),
      h('button', { type: 'submit' }, `Pay ${money(o.total_cents, o.currency)}`)), async (data) => {
      await api('POST', `/api/v1/orders/${o.id}/pay`, Object.fromEntries(data));
      await orderView(o.id, 'Payment accepted. Thank you!');
    });
    parts.push(pay);
  }
  if (o.status === 'paid' && (o.seller_id === me.id || me.role === 'admin')) {
    parts.push(h('h2', {}, 'Ship'), submitter(h('form', { id: 'ship-form' },
      h('label', {}, 'Delivery address', h('textarea', { name: 'address', rows: 3, required: true, maxlength: 500 })),
      h('button', { type: 'submit' }, 'Mark as shipped')), async (data) => {
      await api('POST', `/api/v1/orders/${o.id}/ship`, { address: data.get('address') });
      await orderView(o.id, 'Shipped.');
    }));
  }
  if (o.invoice_number != null) {
    parts.push(h('p', {}, h('a', { href: `#/orders/${o.id}/invoice`, id: 'invoice-link', class: 'button' }, `Invoice ${o.invoice_number}`)));
  }
  parts.push(h('h2', {}, 'History'), table('history', ['When', 'Event', 'Note'],
    o.history.map((e) => h('tr', {}, h('td', {}, when(e.at)), h('td', {}, statusBadge(e.event)), h('td', {}, e.note || '')))));
  show(`Order #${o.id}`, ...parts);
}

// The invoice drawn from its JSON form; printing hides everything but the invoice.
export async function invoiceView(id) {
  if (needSignIn()) return;
  const inv = await api('GET', `/api/v1/orders/${id}/invoice`);
  const m = (c) => money(c, inv.currency);
  show(`Invoice ${inv.reference}`,
    h('div', { class: 'no-print pager' },
      h('button', { type: 'button', id: 'print', onclick: () => window.print() }, 'Print'),
      h('a', { href: `#/orders/${inv.order_id}`, class: 'button secondary' }, `← Order #${inv.order_id}`),
      h('a', { href: `/api/v1/orders/${inv.order_id}/invoice`, class: 'button secondary' }, 'Printable page')),
    h('section', { class: 'invoice card', id: 'invoice' },
      h('p', {}, `Issued ${when(inv.issued_at)} · order #${inv.order_id}`),
      h('p', {}, `Seller: ${inv.seller.username} · Buyer: ${inv.buyer.username}`),
      table('invoice-lines', ['Item', 'Qty', 'Unit price', 'Total'], inv.lines.map((l) => h('tr', {},
        h('td', {}, l.description), h('td', {}, l.quantity), h('td', {}, m(l.unit_price_cents)), h('td', {}, m(l.total_cents))))),
      h('dl', { class: 'totals' },
        h('dt', {}, 'Before tax'), h('dd', {}, m(inv.subtotal_cents)),
        h('dt', {}, `Tax (${inv.tax_rate_bp / 100} %, included)`), h('dd', {}, m(inv.tax_cents)),
        h('dt', {}, 'Total'), h('dd', { id: 'invoice-total' }, h('strong', {}, m(inv.total_cents))))));
}
