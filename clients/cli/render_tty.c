/* The live view of `kiln build` on a terminal, like buildx's: finished steps
 * scroll up as one line each; below them, one line per running step with
 * its elapsed time and, under it, its last output line.  Every line is cut
 * to the terminal's width (so nothing wraps and the cursor arithmetic stays
 * right), the live part is redrawn at least every 100 ms and when the
 * terminal is resized, and colour is left out under NO_COLOR or TERM=dumb.
 *
 * Redrawing: the cursor sits below the live lines; a redraw moves up over
 * them, prints the finished lines not yet shown (each clearing what was
 * there), then the live lines, and clears whatever is left below. */
#include "cli.h"
#include "config.h"
#include "fs.h"
#include "units.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define LIVE_MAX   64  /* running steps shown at once */
#define TAIL_LINES 10  /* output lines kept per running step (shown on failure) */
#define LINE_MAX_B 512 /* bytes kept per line */
#define PEND_MAX   256 /* finished lines waiting for the next redraw */
#define REDRAW_MS  100

typedef struct live_step {
    unsigned no;
    unsigned long long t0;
    char head[LINE_MAX_B]; /* "#3 [build] RUN make (line 7)" */
    char tail[TAIL_LINES][LINE_MAX_B];
    unsigned n_tail, next_tail;
} live_step;

struct cli_tty {
    FILE *out;
    bool colour;
    int cols, rows;
    unsigned drawn; /* live lines on screen below the finished ones */
    unsigned long long last_draw;
    live_step live[LIVE_MAX];
    size_t n_live;
    char *pending[PEND_MAX];
    size_t n_pending;
};

static atomic_int winch = 1; /* set by the signal thread on SIGWINCH; 1: measure first */

void cli_tty_winch(void)
{
    atomic_store(&winch, 1);
}

static void measure(cli_tty *t)
{
    struct winsize ws;
    int fd = fileno(t->out);
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        t->cols = ws.ws_col;
        t->rows = ws.ws_row > 0 ? ws.ws_row : 24;
        return;
    }
    const char *c = getenv("COLUMNS"), *r = getenv("LINES");
    t->cols = c && atoi(c) > 0 ? atoi(c) : 80;
    t->rows = r && atoi(r) > 0 ? atoi(r) : 24;
}

bool cli_stderr_is_tty(void)
{
    const char *term = getenv("TERM");
    return isatty(2) && !(term && strcmp(term, "dumb") == 0);
}

bool cli_tty_colour_ok(void)
{
    const char *nc = getenv("NO_COLOR"), *term = getenv("TERM");
    return !(nc && *nc) && !(term && strcmp(term, "dumb") == 0);
}

cli_tty *cli_tty_new(FILE *out)
{
    cli_tty *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->out = out;
    t->colour = cli_tty_colour_ok();
    measure(t);
    return t;
}

void cli_tty_free(cli_tty *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n_pending; i++)
        free(t->pending[i]);
    free(t);
}

/* Writes s cut to max columns (a UTF-8 sequence counts as one column;
 * CSI sequences are dropped, other control characters become spaces);
 * returns the columns written. */
static int put_clipped(FILE *f, const char *s, int max)
{
    int col = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && col < max; p++) {
        if (p[0] == 0x1b && p[1] == '[') { /* a tool's own colours: dropped, not shown */
            p += 2;
            while (*p && !(*p >= 0x40 && *p <= 0x7e))
                p++;
            if (*p == '\0')
                break;
            continue;
        }
        if (*p >= 0x80) {
            /* a lead byte and its continuation bytes: one column */
            size_t n = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc0 ? 2 : 1;
            size_t k = 1;
            while (k < n && (p[k] & 0xc0) == 0x80)
                k++;
            if (*p >= 0xc0)
                fwrite(p, 1, k, f);
            else
                fputc('?', f);
            p += k - 1;
        } else {
            fputc(*p < 0x20 || *p == 0x7f ? ' ' : *p, f);
        }
        col++;
    }
    return col;
}

static int text_cols(const char *s)
{
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p & 0xc0) != 0x80;
    return n;
}

/* One screen line: left cut to fit, right (status) aligned at the edge. */
static void put_line(cli_tty *t, const char *colour, const char *left, const char *right)
{
    int width = t->cols > 1 ? t->cols - 1 : 1; /* never the last column: no wrap */
    int rw = right && *right ? text_cols(right) + 1 : 0;
    if (rw > width / 2)
        rw = 0, right = NULL;
    if (t->colour && colour)
        fputs(colour, t->out);
    int used = put_clipped(t->out, left, width - rw);
    if (rw) {
        for (int i = used; i < width - rw + 1; i++)
            fputc(' ', t->out);
        put_clipped(t->out, right, rw - 1);
    }
    if (t->colour && colour)
        fputs("\033[0m", t->out);
    fputs("\033[K\n", t->out);
}

static void pend(cli_tty *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pend(cli_tty *t, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (t->n_pending == PEND_MAX)
        cli_tty_draw(t, true); /* flushes pending */
    t->pending[t->n_pending++] = s;
}

/* Lays one frame out into f at t's current size; the pending lines stay
 * (the caller frees them once the frame is written). */
static unsigned render_frame(cli_tty *t, FILE *f, unsigned long long now)
{
    FILE *out = t->out;
    t->out = f; /* put_line writes to t->out */
    if (t->drawn)
        fprintf(f, "\r\033[%uA", t->drawn);
    else
        fputc('\r', f);
    for (size_t i = 0; i < t->n_pending; i++) {
        /* "TEXT\x1fSTATUS": the status goes to the right edge */
        char *tab = strchr(t->pending[i], '\x1f');
        if (tab)
            *tab = '\0';
        put_line(t, NULL, t->pending[i], tab ? tab + 1 : NULL);
        if (tab)
            *tab = '\x1f';
    }
    unsigned lines = 0, room = t->rows > 3 ? (unsigned)t->rows - 2 : 1;
    for (size_t i = 0; i < t->n_live; i++) {
        const live_step *s = &t->live[i];
        bool tail = s->n_tail > 0;
        if (lines + 1 + tail > room) {
            char more[64];
            snprintf(more, sizeof(more), "... %zu more running", t->n_live - i);
            put_line(t, "\033[2m", more, NULL);
            lines++;
            break;
        }
        char el[32];
        snprintf(el, sizeof(el), "%.1fs", (double)(now - s->t0) / 1000.0);
        put_line(t, "\033[36m", s->head, el);
        lines++;
        if (tail) {
            char buf[LINE_MAX_B + 8];
            unsigned last = (s->next_tail + TAIL_LINES - 1) % TAIL_LINES;
            snprintf(buf, sizeof(buf), "  > %s", s->tail[last]);
            put_line(t, "\033[2m", buf, NULL);
            lines++;
        }
    }
    fputs("\033[J", f);
    t->out = out;
    return lines;
}

/* A frame is laid out in memory and written with one write(2): stderr is
 * unbuffered, and a frame written a character at a time could be cut by a
 * resize (or a stop) and finished at the old width, which the terminal then
 * wraps.  The size is measured again just before the write and the frame
 * laid out anew if it changed meanwhile. */
void cli_tty_draw(cli_tty *t, bool force)
{
    unsigned long long now = kiln_now_ms();
    if (atomic_exchange(&winch, 0))
        force = true;
    measure(t); /* every frame: a resize may not have been signalled yet */
    if (!force && t->n_pending == 0 && now - t->last_draw < REDRAW_MS)
        return;
    t->last_draw = now;
    char *buf = NULL;
    size_t len = 0;
    unsigned lines = 0;
    for (int attempt = 0; attempt < 4; attempt++) {
        int cols = t->cols, rows = t->rows;
        free(buf);
        buf = NULL;
        FILE *f = open_memstream(&buf, &len);
        if (f == NULL)
            return;
        lines = render_frame(t, f, now);
        if (fclose(f) != 0) {
            free(buf);
            return;
        }
        measure(t);
        if (t->cols == cols && t->rows == rows)
            break;
    }
    fflush(t->out);
    (void)kiln_write_all(fileno(t->out), buf, len);
    free(buf);
    for (size_t i = 0; i < t->n_pending; i++)
        free(t->pending[i]);
    t->n_pending = 0;
    t->drawn = lines;
}

static live_step *find(cli_tty *t, unsigned no)
{
    for (size_t i = 0; i < t->n_live; i++)
        if (t->live[i].no == no)
            return &t->live[i];
    return NULL;
}

void cli_tty_note(cli_tty *t, const char *text)
{
    pend(t, "%s", text);
    cli_tty_draw(t, false);
}

void cli_tty_step_started(cli_tty *t, unsigned no, const char *head)
{
    live_step *s = find(t, no);
    if (s == NULL && t->n_live < LIVE_MAX)
        s = &t->live[t->n_live++];
    if (s == NULL) { /* more running steps than we track: show it as a line */
        pend(t, "%s", head);
        return;
    }
    memset(s, 0, sizeof(*s));
    s->no = no;
    s->t0 = kiln_now_ms();
    snprintf(s->head, sizeof(s->head), "%s", head);
    cli_tty_draw(t, true);
}

void cli_tty_output(cli_tty *t, unsigned no, const char *line)
{
    live_step *s = find(t, no);
    if (s == NULL)
        return;
    snprintf(s->tail[s->next_tail], LINE_MAX_B, "%s", line);
    s->next_tail = (s->next_tail + 1) % TAIL_LINES;
    if (s->n_tail < TAIL_LINES)
        s->n_tail++;
    cli_tty_draw(t, false);
}

void cli_tty_step_done(cli_tty *t, unsigned no, const char *head, const char *status)
{
    live_step *s = find(t, no);
    pend(t, "%s\x1f%s", s ? s->head : head, status);
    if (s) {
        size_t i = (size_t)(s - t->live);
        memmove(&t->live[i], &t->live[i + 1], (t->n_live - i - 1) * sizeof(*s));
        t->n_live--;
    }
    cli_tty_draw(t, true);
}

void cli_tty_finish(cli_tty *t, bool failed)
{
    /* Steps still running when the build ended (it failed, or was
     * cancelled): their last output lines explain why. */
    for (size_t i = 0; i < t->n_live; i++) {
        live_step *s = &t->live[i];
        pend(t, "%s\x1f%s", s->head, failed ? "ERROR" : "");
        for (unsigned k = 0; k < s->n_tail; k++) {
            unsigned j = (s->next_tail + TAIL_LINES - s->n_tail + k) % TAIL_LINES;
            pend(t, "#%u | %s", s->no, s->tail[j]);
        }
    }
    t->n_live = 0;
    cli_tty_draw(t, true);
}
