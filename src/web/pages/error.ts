import { html } from '../html.js';
import { layout } from './layout.js';

export function errorPage(status: number, message: string): string {
  const title = status === 404 ? 'Not found' : status < 500 ? 'Bad request' : 'Server error';
  return layout({ title, section: 'search' }, html`<h1>${title}</h1>\n<p class="error" role="alert">${message}</p>\n<p><a href="/">Back to the overview</a></p>`);
}
