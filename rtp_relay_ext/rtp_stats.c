/* RTP statistics (RFC 3550 A.1, A.3, A.8), RFC 4733 DTMF detection, G.711 E-model. */
#include "rtp_stats_core.h"

#include <string.h>

void rr_stream_init(rr_stream_stats *s, uint32_t clock_rate, int dtmf_pt)
{
    memset(s, 0, sizeof(*s));
    s->clock_rate = clock_rate;
    s->dtmf_pt = (int16_t)dtmf_pt;
}

char rr_dtmf_digit(uint8_t event)
{
    static const char digits[] = "0123456789*#ABCD";
    if (event < 16)
        return digits[event];
    if (event == 16)
        return '!'; /* RFC 4733 3.2: flash */
    return '?';
}

int rr_dtmf_on_payload(rr_dtmf_state *d, uint32_t rtp_ts, const uint8_t *p, size_t len,
                       rr_dtmf_event out[2])
{
    int n = 0;
    if (len < RR_DTMF_PAYLOAD_LEN)
        return 0;
    /* The redundant end packets (RFC 4733 2.5.1.4 sends three) and late
     * retransmits of an event already reported carry its timestamp or an older one. */
    if (d->have_reported && (int32_t)(rtp_ts - d->reported_ts) <= 0)
        return 0;
    uint8_t ev = p[0];
    uint8_t end = p[1] & 0x80;
    uint8_t volume = p[1] & 0x3f;
    uint16_t duration = (uint16_t)((p[2] << 8) | p[3]);

    if (d->active && rtp_ts != d->ts) {
        /* A new event began before the old one's end packets arrived: all lost. */
        out[n].ts = d->ts;
        out[n].duration = d->duration;
        out[n].event = d->event;
        out[n].volume = d->volume;
        out[n].end_seen = 0;
        n++;
        d->reported_ts = d->ts;
        d->have_reported = 1;
        d->active = 0;
    }
    if (!d->active) {
        d->active = 1;
        d->ts = rtp_ts;
        d->duration = 0;
    }
    d->event = ev;
    d->volume = volume;
    if (duration > d->duration)
        d->duration = duration; /* a reordered earlier update must not shorten it */
    if (end) {
        out[n].ts = d->ts;
        out[n].duration = d->duration;
        out[n].event = d->event;
        out[n].volume = d->volume;
        out[n].end_seen = 1;
        n++;
        d->reported_ts = d->ts;
        d->have_reported = 1;
        d->active = 0;
    }
    return n;
}

int rr_stream_on_packet(rr_stream_stats *s, const uint8_t *pkt, size_t len, int64_t arrival_ns,
                        int rtcp_mux, rr_dtmf_event dtmf_out[2], int *n_dtmf)
{
    *n_dtmf = 0;
    if (len < RR_RTP_HEADER_LEN || (pkt[0] >> 6) != 2) {
        s->non_rtp++;
        return RR_PKT_NOT_RTP;
    }
    if (rtcp_mux && pkt[1] >= RR_RTCP_MUX_PT_MIN && pkt[1] <= RR_RTCP_MUX_PT_MAX) {
        s->rtcp_packets++;
        s->rtcp_bytes += len;
        return RR_PKT_RTCP;
    }
    size_t hlen = RR_RTP_HEADER_LEN + 4u * (pkt[0] & 0x0f);
    if (pkt[0] & 0x10) { /* header extension (RFC 3550 5.3.1) */
        if (hlen + 4 > len) {
            s->non_rtp++;
            return RR_PKT_NOT_RTP;
        }
        hlen += 4 + 4u * (size_t)((pkt[hlen + 2] << 8) | pkt[hlen + 3]);
    }
    size_t pad = (pkt[0] & 0x20) ? pkt[len - 1] : 0;
    if (hlen + pad > len) {
        s->non_rtp++;
        return RR_PKT_NOT_RTP;
    }
    uint8_t pt = pkt[1] & 0x7f;
    uint16_t seq = (uint16_t)((pkt[2] << 8) | pkt[3]);
    uint32_t ts = ((uint32_t)pkt[4] << 24) | ((uint32_t)pkt[5] << 16) | ((uint32_t)pkt[6] << 8) | pkt[7];
    uint32_t ssrc = ((uint32_t)pkt[8] << 24) | ((uint32_t)pkt[9] << 16) | ((uint32_t)pkt[10] << 8) | pkt[11];
    int is_dtmf = s->dtmf_pt >= 0 && pt == (uint8_t)s->dtmf_pt;

    if (!rr_stream_account_seq(s, seq, ssrc, (uint32_t)len))
        return is_dtmf ? RR_PKT_DTMF : RR_PKT_RTP;
    if (is_dtmf) {
        s->dtmf_packets++;
        /* Event timestamps stay at the event start, so they must not feed jitter. */
        *n_dtmf = rr_dtmf_on_payload(&s->dtmf, ts, pkt + hlen, len - hlen - pad, dtmf_out);
        return RR_PKT_DTMF;
    }
    rr_stream_account_jitter(s, ts, arrival_ns);
    return RR_PKT_RTP;
}

double rr_mos_g711(double loss_fraction, double jitter_ms, double base_delay_ms)
{
    double d = base_delay_ms + 2.0 * jitter_ms;
    double id = 0.024 * d + (d > RR_EMODEL_ID_KNEE_MS ? 0.11 * (d - RR_EMODEL_ID_KNEE_MS) : 0.0);
    double ppl = loss_fraction * 100.0;
    if (ppl < 0)
        ppl = 0;
    if (ppl > 100)
        ppl = 100;
    /* G.107 7.4 with BurstR = 1 (random loss). */
    double ie_eff = RR_EMODEL_G711_IE + (95.0 - RR_EMODEL_G711_IE) * ppl / (ppl + RR_EMODEL_G711_BPL);
    double r = RR_EMODEL_R0 - id - ie_eff;
    if (r <= 0)
        return 1.0;
    if (r >= 100)
        return 4.5;
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6;
}

void rr_stream_report_get(const rr_stream_stats *s, rr_stream_report *o)
{
    memset(o, 0, sizeof(*o));
    o->packets = s->packets;
    o->bytes = s->bytes;
    o->duplicates = s->duplicates;
    o->out_of_order = s->out_of_order;
    o->non_rtp = s->non_rtp;
    o->rtcp_packets = s->rtcp_packets;
    o->rtcp_bytes = s->rtcp_bytes;
    o->dtmf_packets = s->dtmf_packets;
    o->seq_resets = s->seq_resets;
    o->ssrc = s->ssrc;
    o->extended_max_seq = s->initialized ? s->cycles + s->max_seq : 0;
    o->expected = s->expected_prior + rr_run_expected(s);
    o->lost = (int64_t)o->expected - (int64_t)(s->received_prior + s->received);
    o->loss_fraction = (o->expected && o->lost > 0) ? (double)o->lost / (double)o->expected : 0.0;
    o->jitter_ms = s->clock_rate ? ((double)s->jitter_q4 / 16.0) * 1000.0 / s->clock_rate : 0.0;
    o->mos = s->initialized ? rr_mos_g711(o->loss_fraction, o->jitter_ms, RR_MOS_BASE_DELAY_MS) : 0.0;
}
